import type { Redis } from "ioredis";
import { z } from "zod";
import type { FrameSrc } from "../pipeline/can/frame.js";
import type { RedisKeys } from "../pipeline/runtime/keys.js";
import { atMost } from "../pipeline/runtime/retry.js";
import type { SourceEnvelope } from "../pipeline/runtime/scanner.js";
import { port, type StageSpec } from "../pipeline/runtime/stage.js";
import { Appender } from "./append/buffer.js";
import { CAN_ENTRIES, type CanEntry } from "./append/entry.js";
import { type IngestLedger, spoolTarget } from "./append/ledger.js";
import { StreamUpkeep } from "./append/upkeep.js";

// stream-append, the scanner chain's last stage: entries → the raw stream, in
// order, through a bounded buffer (stages/append/buffer.ts) that survives a
// Redis outage and a stop (spool file); it keeps the stream trimmed and the
// scanner's health key current (stages/append/upkeep.ts). It never touches
// PostgreSQL.

/** What the chain's end says: how many entries each chunk handed to the buffer. */
export const RAW_STREAM = port<number>("raw-stream");

export const streamAppendOptions = z.object({
  buffer: z.number().int().min(1).default(100_000).describe("entries held while Redis is down; beyond that dropped"),
  chunk: z.number().int().min(1).max(100_000).default(1_000).describe("XADDs per pipelined round trip"),
  trimEveryMs: z.number().int().min(100).default(1_000).describe("trim and health update interval (ms)"),
  trimEveryAppends: z.number().int().min(1).default(20_000).describe("also trim after this many appends"),
  trimAcked: z.number().int().min(1).default(10_000).describe("acknowledged entries the trim keeps (~)"),
  hardLimit: z.number().int().min(1).default(2_000_000).describe("stream length past which unread entries are dropped"),
  warnLength: z.number().int().min(1).default(5_000).describe("backlog past which a warning is logged"),
  warnEveryMs: z.number().int().min(0).default(10_000).describe("at most one backlog warning per this many ms"),
  stopFlushMs: z.number().int().min(0).default(8_000).describe("on stop: time the buffer gets to reach Redis (ms)"),
  finalStepMs: z.number().int().min(0).default(1_500).describe("on stop: each last trim and health write (ms)"),
});

export interface StreamAppendDeps {
  redis: Redis;
  keys: RedisKeys;
  /** The Redis URL (the spool names the Redis and stream it is for). */
  redisUrl: string;
  /** The workers' consumer group (the trim keeps the stream for it). */
  group: string;
  ledger: IngestLedger;
  /** Where entries that Redis did not take by the time of a stop are kept until the next start. */
  spoolFile: string;
  source: { name: string; src: FrameSrc };
  healthTtlS: number;
  /** Problems and counters of the scanner's components, for the health key. */
  extra?: () => { problems: string[]; fields: Record<string, unknown> };
}

/** Raised at the end of a source when every frame was appended but the trim still fails. */
export class TrimFailingError extends Error {
  override name = "TrimFailingError";
}

export function streamAppendStage(
  deps: StreamAppendDeps,
): StageSpec<CanEntry[], number, typeof streamAppendOptions, SourceEnvelope> {
  return {
    name: "stream-append",
    consumes: CAN_ENTRIES,
    emits: RAW_STREAM,
    options: streamAppendOptions,
    failure: {
      // a Redis outage never reaches the runtime (buffered, retried, spooled at stop): a thrown error is a fault
      classify: () => "fatal",
      describe: (err) => `append failed: ${(err as Error).message}`,
      backoff: { baseMs: 100, maxMs: 5_000 },
    },
    create(ctx, o) {
      const statsKey = deps.keys.stats("can-scanner");
      const upkeep = new StreamUpkeep(
        { ...deps, statsKey, log: ctx.log },
        { trimAcked: o.trimAcked, hardLimit: o.hardLimit, warnLength: o.warnLength, warnEveryMs: o.warnEveryMs },
      );
      const appender = new Appender(
        {
          redis: deps.redis,
          stream: deps.keys.raw,
          statsKey,
          ledger: deps.ledger,
          log: ctx.log,
          spoolFile: deps.spoolFile,
          spoolTarget: spoolTarget(deps.redisUrl, deps.keys.raw),
          upkeep,
        },
        { buffer: o.buffer, chunk: o.chunk, trimEveryAppends: o.trimEveryAppends, stopFlushMs: o.stopFlushMs },
      );
      appender.start();
      const stopping = ctx.stopping;
      if (stopping?.aborted) appender.stop();
      stopping?.addEventListener("abort", () => appender.stop(), { once: true });
      let busy = false;
      const periodic = setInterval(() => {
        if (!appender.redisUp() || busy) return;
        busy = true;
        Promise.all([upkeep.trimSafely(), upkeep.writeHealth()])
          .catch((err: Error) =>
            ctx.log.warn({ err: err.message }, "periodic health update failed; next round retries"),
          )
          .finally(() => {
            busy = false;
          });
      }, o.trimEveryMs);
      let spooled = 0;
      return {
        async process(env, entries) {
          await appender.offer(entries, env.pausable);
          return entries.length;
        },
        counters: () => ({ spooled, buffered: appender.size }),
        async close() {
          clearInterval(periodic);
          spooled = await appender.finish();
          if (appender.redisUp()) {
            await atMost(upkeep.trimSafely(), o.finalStepMs);
            await atMost(upkeep.writeHealth(), o.finalStepMs);
          }
          if (!stopping?.aborted && upkeep.trimError)
            throw new TrimFailingError(
              `source finished and every frame appended, but the stream trim still fails: ${upkeep.trimError}`,
            );
        },
      };
    },
  };
}
