/**
 * Prometheus metrics. Job figures come from the catalog, so any API instance reports the
 * whole fleet; HTTP figures are this process's own.
 */
import client from 'prom-client';
import type { Catalog } from '../catalog/catalog.js';
import { JOB_KINDS, JOB_SECONDS_BUCKETS, JOB_STATUSES, type JobStats } from '../catalog/jobs.js';
import { CATALOG_CHECK_MS, within } from './deadline.js';

/** Job durations as a Prometheus histogram, its buckets counted by the catalog. */
function durationHistogram(stats: () => Promise<JobStats[] | undefined>) {
  const name = 'chunkvault_job_duration_seconds';
  const help = 'Duration of jobs that ran, by kind';
  return {
    name, help, type: 'histogram',
    async get() {
      const all = await stats();
      const values: { labels: Record<string, string | number>; value: number; metricName: string }[] = [];
      for (const kind of all ? JOB_KINDS : []) {
        const mine = all!.filter((s) => s.kind === kind);
        const total = (pick: (s: JobStats) => number) => mine.reduce((n, s) => n + pick(s), 0);
        JOB_SECONDS_BUCKETS.forEach((le, i) => values.push({ labels: { kind, le }, value: total((s) => s.buckets[i]!), metricName: `${name}_bucket` }));
        values.push({ labels: { kind, le: '+Inf' }, value: total((s) => s.timed), metricName: `${name}_bucket` });
        values.push({ labels: { kind }, value: total((s) => s.seconds), metricName: `${name}_sum` });
        values.push({ labels: { kind }, value: total((s) => s.timed), metricName: `${name}_count` });
      }
      return { name, help, type: 'histogram', values, aggregator: 'sum' };
    },
  };
}

export class Metrics {
  readonly registry = new client.Registry();
  readonly httpDuration: client.Histogram<'method' | 'route' | 'code'>;
  private stats: Promise<JobStats[] | undefined> | undefined;

  constructor(catalog: Catalog) {
    const registry = this.registry;
    client.collectDefaultMetrics({ register: registry, prefix: 'chunkvault_' });
    this.httpDuration = new client.Histogram({
      name: 'chunkvault_http_request_duration_seconds',
      help: 'HTTP API request latency',
      labelNames: ['method', 'route', 'code'],
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers: [registry],
    });
    // One catalog query per scrape feeds every job metric. Without the catalog they are left
    // out (and chunkvault_catalog_up says 0); the process's own metrics are still served.
    const stats = () => (this.stats ??= within(catalog.jobs.stats().catch(() => undefined), CATALOG_CHECK_MS, undefined)
      .finally(() => setTimeout(() => (this.stats = undefined), 500)));
    new client.Gauge({
      name: 'chunkvault_catalog_up', help: 'Whether the catalog answered this scrape', registers: [registry],
      async collect() {
        this.set((await stats()) ? 1 : 0);
      },
    });
    const perKind = (name: string, help: string, pick: (s: JobStats) => number) =>
      new client.Counter({
        name, help, labelNames: ['kind'], registers: [registry],
        async collect() {
          const all = await stats();
          this.reset();
          if (!all) return;
          for (const kind of JOB_KINDS) this.inc({ kind }, all.filter((s) => s.kind === kind).reduce((n, s) => n + pick(s), 0));
        },
      });
    new client.Gauge({
      name: 'chunkvault_jobs', help: 'Jobs in the catalog by kind and status', labelNames: ['kind', 'status'], registers: [registry],
      async collect() {
        const all = await stats();
        this.reset();
        if (!all) return;
        for (const kind of JOB_KINDS) {
          for (const status of JOB_STATUSES) this.set({ kind, status }, all.find((s) => s.kind === kind && s.status === status)?.count ?? 0);
        }
      },
    });
    perKind('chunkvault_job_bytes_total', 'Volume bytes moved by finished jobs', (s) => s.bytes);
    registry.registerMetric(durationHistogram(stats) as unknown as client.Metric);
    perKind('chunkvault_job_storage_retries_total', 'Object-store calls retried after transient faults', (s) => s.retries);
    perKind('chunkvault_job_errors_total', 'Jobs that failed', (s) => (s.status === 'failed' ? s.count : 0));
    perKind('chunkvault_jobs_finished_total', 'Jobs that ended (succeeded, failed or cancelled)', (s) =>
      s.status === 'queued' || s.status === 'running' ? 0 : s.count);
  }
}
