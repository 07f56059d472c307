/** The OpenAPI document of the HTTP API, built from the same schemas that validate requests. */
import { z } from 'zod';
import { BackupView, CreateBackupBody, ErrorView, ImportBody, JobView, ListBackupsQuery, ListJobsQuery, RestoreBody } from './schemas.js';

const schema = (s: z.ZodType, io: 'input' | 'output' = 'output') => z.toJSONSchema(s, { io, unrepresentable: 'any' });
const ref = (name: string) => ({ $ref: `#/components/schemas/${name}` });
const json = (s: object) => ({ content: { 'application/json': { schema: s } } });
const wrap = (key: string, s: object) => ({ type: 'object', properties: { [key]: s }, required: [key] });
const errors = Object.fromEntries(
  [['400', 'invalid request'], ['401', 'missing or invalid token'], ['403', 'token not allowed to change things'],
    ['404', 'no such backup or job'], ['405', 'method not allowed on this path'], ['409', 'conflicts with the current status'],
    ['413', 'request body larger than 2 MiB'], ['500', 'internal error (logged by the server)'],
    ['502', 'the repository answered with an error or holds damaged data'], ['503', 'the catalog or the repository is unreachable']]
    .map(([code, description]) => [code, { description, ...json(ref('Error')) }]),
);
const query = (s: z.ZodObject) =>
  Object.entries(s.shape).map(([name, f]) => ({ name, in: 'query', required: false, schema: schema(f as z.ZodType, 'input') }));
const backupList = { type: 'object', properties: { backups: { type: 'array', items: ref('Backup') }, backups_links: { type: 'array' } } };
const idParam = (name: string) => ({ name, in: 'path', required: true, schema: { type: 'string' } });

export function openApiDocument(version: string): object {
  return {
    openapi: '3.1.0',
    info: { title: 'chunkvault backup service', version, description: 'Block-volume backups in Cinder\'s chunked format, run by a fleet of workers.' },
    components: {
      securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } },
      schemas: {
        CreateBackup: schema(CreateBackupBody, 'input'), Restore: schema(RestoreBody, 'input'), ImportRecord: schema(ImportBody, 'input'),
        Backup: schema(BackupView), Job: schema(JobView), Error: schema(ErrorView),
      },
    },
    security: [{ bearer: [] }],
    paths: {
      '/v1/backups': {
        get: { summary: 'List backups (oldest first)', parameters: query(ListBackupsQuery),
          responses: { 200: { description: 'backups', ...json(backupList) }, ...errors } },
        post: { summary: 'Queue a backup of a volume', requestBody: { required: true, ...json(ref('CreateBackup')) },
          responses: { 202: { description: 'queued', ...json(wrap('backup', ref('Backup'))) }, ...errors } },
      },
      '/v1/backups/detail': {
        get: { summary: 'List backups (oldest first); the same as GET /v1/backups, under Cinder\'s name', parameters: query(ListBackupsQuery),
          responses: { 200: { description: 'backups', ...json(backupList) }, ...errors } },
      },
      '/v1/backups/{id}': {
        parameters: [idParam('id')],
        get: { summary: 'A backup, with the progress of its running job', responses: { 200: { description: 'the backup', ...json(wrap('backup', ref('Backup'))) }, ...errors } },
        delete: { summary: 'Delete a backup; cancels it while it is being written', responses: { 202: { description: 'deleting', ...json(wrap('backup', ref('Backup'))) }, ...errors } },
      },
      '/v1/backups/{id}/restore': {
        parameters: [idParam('id')],
        post: { summary: 'Queue a restore', requestBody: { required: true, ...json(ref('Restore')) },
          responses: { 202: { description: 'queued', ...json(wrap('restore', { type: 'object', properties: { backup_id: { type: 'string' }, job_id: { type: 'string' }, target: { type: 'string' } } })) }, ...errors } },
      },
      '/v1/backups/{id}/export_record': {
        parameters: [idParam('id')],
        get: { summary: 'Export the record (Cinder backup-export format)', responses: { 200: { description: 'record', ...json(wrap('backup-record', ref('ImportRecord'))) }, ...errors } },
      },
      '/v1/backups/import_record': {
        post: { summary: 'Import a record exported by chunkvault or Cinder', requestBody: { required: true, ...json(ref('ImportRecord')) },
          responses: { 201: { description: 'imported', ...json(wrap('backup', ref('Backup'))) }, ...errors } },
      },
      '/v1/jobs': { get: { summary: 'List jobs (newest first)', parameters: query(ListJobsQuery), responses: { 200: { description: 'jobs', ...json(wrap('jobs', { type: 'array', items: ref('Job') })) }, ...errors } } },
      '/v1/jobs/{id}': { parameters: [idParam('id')], get: { summary: 'A job', responses: { 200: { description: 'the job', ...json(wrap('job', ref('Job'))) }, ...errors } } },
      '/v1/jobs/{id}/cancel': { parameters: [idParam('id')], post: { summary: 'Cancel a queued or running job', responses: { 202: { description: 'cancelled (queued), or asked to stop (running: a backup stops before its commit point, a restore before its output is finished; one already past that ends succeeded)', ...json(wrap('job', ref('Job'))) }, ...errors } } },
      '/healthz': { get: { summary: 'Liveness and catalog reachability', security: [], responses: { 200: { description: 'healthy' }, 503: { description: 'catalog unreachable' } } } },
      '/metrics': { get: { summary: 'Prometheus metrics', security: [], responses: { 200: { description: 'text exposition format' } } } },
      '/v1/openapi.json': { get: { summary: 'This document', security: [], responses: { 200: { description: 'OpenAPI 3.1' } } } },
    },
  };
}
