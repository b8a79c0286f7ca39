// The one scheduler in front of the engine: one job at a time, in order; cancelled queued jobs never run.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import type * as schedulerModule from '../../server/src/scheduler';
import { serverModule } from '../helpers';

const { Scheduler } = serverModule<typeof schedulerModule>('scheduler');

/** A job that takes `ms`, records its start/end in `log`, and ends early when stopped. */
function timed(log: string[], name: string, ms: number): schedulerModule.JobSpec<string> {
  return {
    onStart: () => log.push(`start ${name}`),
    cancelledBeforeStart: () => `${name} dropped`,
    run: (ctx) =>
      new Promise((resolve) => {
        const timer = setTimeout(() => {
          log.push(`end ${name}`);
          resolve(`${name} done`);
        }, ms);
        ctx.onCancel(() => {
          clearTimeout(timer);
          log.push(`stop ${name}`);
          resolve(`${name} stopped`);
        });
      }),
  };
}

test('jobs run one at a time in submission order; busy is false when the last result resolves', async () => {
  const s = new Scheduler();
  const log: string[] = [];
  const jobs = ['a', 'b', 'c'].map((n) => s.submit(timed(log, n, 5)));
  assert.deepEqual(jobs.map((j) => j.state), ['running', 'queued', 'queued']);
  assert.equal(s.queued, 2);
  const last = jobs[2].result.then((r) => ({ r, busy: s.busy }));
  assert.deepEqual(await Promise.all(jobs.slice(0, 2).map((j) => j.result)), ['a done', 'b done']);
  assert.deepEqual(await last, { r: 'c done', busy: false });
  assert.deepEqual(log, ['start a', 'end a', 'start b', 'end b', 'start c', 'end c']);
});

test('cancel: a queued job never runs; a running one is stopped; cancelAll does both', async () => {
  const s = new Scheduler();
  const log: string[] = [];
  const a = s.submit(timed(log, 'a', 1000));
  const b = s.submit(timed(log, 'b', 5));
  b.cancel();
  assert.equal(await b.result, 'b dropped');
  a.cancel();
  assert.equal(await a.result, 'a stopped');
  const c = s.submit(timed(log, 'c', 1000));
  const d = s.submit(timed(log, 'd', 1000));
  s.cancelAll();
  assert.deepEqual(await Promise.all([c.result, d.result]), ['c stopped', 'd dropped']);
  await s.idle();
  assert.equal(s.busy, false);
  assert.deepEqual(log, ['start a', 'stop a', 'start c', 'stop c']);
});

test('a failing job rejects its own result and the queue goes on; cancelledBeforeStart may reject', async () => {
  const s = new Scheduler();
  const log: string[] = [];
  const bad = s.submit<string>({ cancelledBeforeStart: () => '', run: () => Promise.reject(new Error('boom')) });
  const good = s.submit(timed(log, 'g', 1));
  const dropped = s.submit<string>({ cancelledBeforeStart: () => { throw new Error('cancelled'); }, run: () => Promise.resolve('x') });
  dropped.cancel();
  await assert.rejects(bad.result, /boom/);
  await assert.rejects(dropped.result, /cancelled/);
  assert.equal(await good.result, 'g done');
});

test('a stop registered after the job was cancelled runs at once', async () => {
  const s = new Scheduler();
  let stopped = false;
  const job = s.submit<void>({
    cancelledBeforeStart: () => undefined,
    run: async (ctx) => {
      await new Promise((r) => setTimeout(r, 5)); // cancelled meanwhile
      assert.equal(ctx.cancelled, true);
      ctx.onCancel(() => (stopped = true));
    },
  });
  job.cancel();
  await job.result;
  assert.equal(stopped, true);
});
