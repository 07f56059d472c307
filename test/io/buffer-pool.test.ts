/** BufferPool lends a bounded number of buffers, made on demand and reused. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { BufferPool, sharedBufferPool } from '../../src/io/buffer-pool.js';

describe('BufferPool', () => {
  it('makes buffers on demand up to its limit, then lends returned ones in order of request', async () => {
    let made = 0;
    const pool = new BufferPool(2, async () => (made++, Buffer.alloc(4)));
    const a = await pool.acquire();
    const b = await pool.acquire();
    assert.equal(made, 2);
    const order: string[] = [];
    const c = pool.acquire().then((x) => (order.push('c'), x));
    const d = pool.acquire().then((x) => (order.push('d'), x));
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(order, [], 'both wait while every buffer is lent');
    pool.release(b);
    assert.equal(await c, b);
    pool.release(a);
    assert.equal(await d, a);
    assert.deepEqual(order, ['c', 'd']);
    assert.equal(made, 2, 'no buffer beyond the limit');
  });

  it('does not count a buffer whose making failed', async () => {
    let fail = true;
    const pool = new BufferPool(1, async () => {
      if (fail) throw new Error('no memory');
      return Buffer.alloc(1);
    });
    await assert.rejects(pool.acquire(), /no memory/);
    fail = false;
    assert.equal((await pool.acquire()).length, 1);
  });

  it('shared pools hand out SharedArrayBuffer memory worker threads can fill', async () => {
    const b = await sharedBufferPool(1024, 1).acquire();
    assert.ok(b.buffer instanceof SharedArrayBuffer);
    assert.equal(b.length, 1024);
  });
});
