import { Agent as HttpAgent } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';
import type { Readable } from 'node:stream';
import {
  CreateBucketCommand, DeleteObjectCommand, GetObjectCommand, HeadBucketCommand, HeadObjectCommand, ListObjectsV2Command,
  PutObjectCommand, S3Client,
} from '@aws-sdk/client-s3';
import { BackendError, InvalidInputError, NotFoundError, TransientBackendError } from '../errors.js';
import { ownMemory, type Backend, type CallOptions, ListOptions, type ObjectPieces, type ObjectRange } from './backend.js';
import { classifyFailure, isTransientTransportError, md5, md5Pieces, piecesStream, rangeSize, withDeadline } from './faults.js';

export interface S3Options {
  /** Default bucket for new backups (the address's host part). */
  bucket: string;
  endpoint?: string;
  region?: string;
  /** Path-style addressing (S3-compatible servers); virtual-host style otherwise. */
  pathStyle?: boolean;
  profile?: string;
  /** Keys per listing page (S3 caps it at 1000). */
  pageSize?: number;
  requestTimeoutMs?: number;
}

/**
 * A repository in S3-compatible object storage, laid out as Cinder's S3 driver does: the
 * container is a bucket, objects are keys. Credentials come from the AWS SDK's standard
 * chain (environment, shared config and credentials files, profiles), never the address.
 */
export class S3Backend implements Backend {
  readonly kind = 's3' as const;
  readonly nestedContainers = false;
  /** S3's limit for one PUT. */
  readonly maxObjectBytes = 5 * 1024 ** 3;
  readonly url: string;
  readonly defaultContainer: string;
  private readonly client: S3Client;
  private readonly timeoutMs: number;
  /** Our own connection pools: idle connections found dead are dropped (see `call`). */
  private readonly agents = [new HttpAgent({ keepAlive: true, maxSockets: 50 }), new HttpsAgent({ keepAlive: true, maxSockets: 50 })];

  constructor(private readonly opts: S3Options) {
    // The repository's identity (recorded in the catalog): bucket and endpoint, not how we reach them.
    this.url = `s3://${opts.bucket}${opts.endpoint ? `?endpoint=${encodeURIComponent(opts.endpoint)}` : ''}`;
    this.defaultContainer = opts.bucket;
    this.timeoutMs = opts.requestTimeoutMs ?? 120_000;
    // The SDK warns on stderr about Node 20 on every run; chunkvault supports Node 20.
    process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
    this.client = new S3Client({
      endpoint: opts.endpoint,
      region: opts.region ?? process.env.AWS_REGION ?? process.env.AWS_DEFAULT_REGION ?? 'us-east-1',
      forcePathStyle: opts.pathStyle ?? !!opts.endpoint,
      ...(opts.profile ? { profile: opts.profile } : {}),
      // S3-compatible servers reject the SDK's default streaming checksums.
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
      // RetryBackend owns retries (and counts them).
      maxAttempts: 1,
      // Without a logger the SDK warns on the console of every failed streamed PUT, which RetryBackend tries again.
      logger: { debug: () => {}, info: () => {}, warn: () => {}, error: () => {} },
      requestHandler: { httpAgent: this.agents[0], httpsAgent: this.agents[1] },
    });
  }

  private async call<T>(what: string, ctx: { container: string; object?: string }, opts: CallOptions | undefined, fn: (signal: AbortSignal) => Promise<T>): Promise<T> {
    opts?.signal?.throwIfAborted();
    const started = Date.now();
    try {
      return await withDeadline(opts?.signal, this.timeoutMs, fn);
    } catch (err) {
      const label = `s3 ${what} ${ctx.container}${ctx.object ? '/' + ctx.object : ''}`;
      if (!opts?.signal?.aborted && isTransientTransportError(err) && Date.now() - started < this.timeoutMs) {
        // A connection that failed at once (the SDK names resets "TimeoutError" too): idle pooled
        // connections may all be dead alike (a server or load balancer closed them), so they go.
        this.dropIdleConnections();
        throw new TransientBackendError(`${label}: connection failed: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { ...ctx, cause: err });
      }
      if ((err as Error).name === 'TimeoutError' || (err as { cause?: Error }).cause?.name === 'TimeoutError' || (!opts?.signal?.aborted && (err as Error).name === 'AbortError')) {
        throw new TransientBackendError(`${label}: no answer within ${this.timeoutMs} ms`, ctx);
      }
      if ((err as Error).name === 'CredentialsProviderError') {
        throw new InvalidInputError(`s3: no credentials (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or a profile with AWS_PROFILE or profile=): ${(err as Error).message}`);
      }
      const status = (err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
      const name = (err as Error).name;
      const named = name && name !== 'Unknown' && name !== 'Error' && status && status !== 401 && status !== 403;
      throw classifyFailure(err, named ? `${label}: ${name}` : label, ctx, status, opts?.signal);
    }
  }

  async ensureContainer(bucket: string, opts?: CallOptions): Promise<void> {
    const exists = await this.call('HEAD bucket', { container: bucket }, opts, (abortSignal) =>
      this.client.send(new HeadBucketCommand({ Bucket: bucket }), { abortSignal }).then(() => true),
    ).catch((err) => {
      if (err instanceof NotFoundError) return false;
      throw err;
    });
    if (exists) return;
    await this.call('create bucket', { container: bucket }, opts, (abortSignal) =>
      this.client.send(new CreateBucketCommand({ Bucket: bucket }), { abortSignal }),
    ).catch((err) => {
      if (/BucketAlreadyOwnedByYou|BucketAlreadyExists/.test((err as Error).message)) return;
      throw err;
    });
  }

  async *list(bucket: string, prefix: string, opts?: ListOptions): AsyncIterable<string> {
    let token: string | undefined;
    do {
      const page = await this.call('list', { container: bucket }, opts, (abortSignal) =>
        this.client.send(new ListObjectsV2Command({
          Bucket: bucket, Prefix: prefix || undefined, ContinuationToken: token, MaxKeys: this.opts.pageSize,
          StartAfter: token === undefined ? opts?.after : undefined,
        }), { abortSignal }),
      ).catch((err) => {
        if (err instanceof NotFoundError) return undefined; // no bucket: no objects
        throw err;
      });
      if (!page) return;
      for (const o of page.Contents ?? []) if (o.Key !== undefined) yield o.Key;
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
  }

  async put(bucket: string, key: string, data: Uint8Array, opts?: CallOptions): Promise<void> {
    await this.store(bucket, key, ownMemory(data), data.length, md5(data), opts);
  }

  async putPieces(bucket: string, key: string, data: ObjectPieces, opts?: CallOptions): Promise<void> {
    const digest = md5Pieces(data, `s3 PUT ${bucket}/${key}`, { container: bucket, object: key });
    await this.store(bucket, key, piecesStream(data), data.length, digest, opts);
  }

  private async store(bucket: string, key: string, body: Uint8Array | Readable, length: number, digest: Buffer, opts?: CallOptions): Promise<void> {
    const r = await this.call('PUT', { container: bucket, object: key }, opts, (abortSignal) =>
      this.client.send(new PutObjectCommand({
        Bucket: bucket, Key: key, Body: body, ContentLength: length, ContentMD5: digest.toString('base64'),
      }), { abortSignal }),
    );
    // An S3 server answers a stored object with its ETag: 32 hex digits, the MD5 of the data for a
    // plain PUT (encrypted buckets answer another digest; the server checked Content-MD5 anyway).
    // No ETag, or one of another shape: whatever answered is no S3 server and stored nothing.
    const etag = r.ETag?.replace(/"/g, '');
    if (!etag || !/^[0-9a-f]{32}$/i.test(etag)) {
      throw new BackendError(`s3 PUT ${bucket}/${key}: the server answered ETag ${etag || '(none)'}, not a digest of the data such as its MD5 ${digest.toString('hex')}`,
        { container: bucket, object: key });
    }
  }

  async get(bucket: string, key: string, opts?: CallOptions): Promise<Buffer> {
    return this.call('GET', { container: bucket, object: key }, opts, async (abortSignal) => {
      const r = await this.client.send(new GetObjectCommand({ Bucket: bucket, Key: key }), { abortSignal });
      const bytes = await r.Body!.transformToByteArray();
      return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    });
  }

  async readRange(bucket: string, key: string, offset: number, length: number, opts?: CallOptions): Promise<ObjectRange> {
    const ctx = { container: bucket, object: key };
    const part = length === 0 ? undefined : await this.call('GET', ctx, opts, async (abortSignal) => {
      const r = await this.client.send(new GetObjectCommand({ Bucket: bucket, Key: key, Range: `bytes=${offset}-${offset + length - 1}` }), { abortSignal })
        .catch((err) => {
          // 416 InvalidRange: nothing from `offset` on (an empty object has no range at all).
          if ((err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode === 416) return undefined;
          throw err;
        });
      if (!r) return undefined;
      const bytes = await r.Body!.transformToByteArray();
      const body = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
      // No Content-Range: the server ignored the Range header and sent the whole object.
      if (r.ContentRange === undefined) return { bytes: body.subarray(offset, offset + length), size: body.length };
      return { bytes: body, size: rangeSize(r.ContentRange, `s3 GET ${bucket}/${key}`, ctx) };
    });
    return part ?? { bytes: Buffer.alloc(0), size: await this.size(bucket, key, opts) };
  }

  private async size(bucket: string, key: string, opts?: CallOptions): Promise<number> {
    const r = await this.call('HEAD', { container: bucket, object: key }, opts, (abortSignal) =>
      this.client.send(new HeadObjectCommand({ Bucket: bucket, Key: key }), { abortSignal }));
    if (r.ContentLength === undefined) throw new BackendError(`s3 HEAD ${bucket}/${key}: the server answered no Content-Length`, { container: bucket, object: key });
    return r.ContentLength;
  }

  async exists(bucket: string, key: string, opts?: CallOptions): Promise<boolean> {
    return this.call('HEAD', { container: bucket, object: key }, opts, (abortSignal) =>
      this.client.send(new HeadObjectCommand({ Bucket: bucket, Key: key }), { abortSignal }).then(() => true),
    ).catch((err) => {
      if (err instanceof NotFoundError) return false;
      throw err;
    });
  }

  async delete(bucket: string, key: string, opts?: CallOptions): Promise<void> {
    await this.call('DELETE', { container: bucket, object: key }, opts, (abortSignal) =>
      this.client.send(new DeleteObjectCommand({ Bucket: bucket, Key: key }), { abortSignal }),
    ).catch((err) => {
      if (!(err instanceof NotFoundError)) throw err;
    });
  }

  async flush(): Promise<void> {}

  private dropIdleConnections(): void {
    for (const agent of this.agents) {
      for (const sockets of Object.values(agent.freeSockets)) for (const socket of sockets ?? []) socket.destroy();
    }
  }

  async close(): Promise<void> {
    this.client.destroy();
    for (const agent of this.agents) agent.destroy();
  }
}
