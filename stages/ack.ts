import type { Redis } from "ioredis";
import { z } from "zod";
import { ackBatch } from "../pipeline/runtime/ack.js";
import type { RedisKeys } from "../pipeline/runtime/keys.js";
import { port, type StageSpec } from "../pipeline/runtime/stage.js";
import { ensureGroup, isNoGroup } from "../pipeline/runtime/stream.js";
import { WRITTEN_BATCH, type WrittenBatch } from "./batch-copy.js";

// ack: after COMMIT, one atomic script (pipeline/runtime/ack.lua): the batch's
// dead letters (into the dead stream with orig_id, reason, deliveries and the
// entry's own fields; repeats of one cause only counted), XACK of exactly the
// batch's entries (written, dead-lettered, or skipped), the dead stream kept
// to its limits, and the worker's counters. A crash between COMMIT and this
// step only causes a redelivery that writes nothing new; a retry of this step
// writes no dead letter twice.

export interface AckedBatch {
  acked: number;
}

export const ACKED = port<AckedBatch>("acked");

export const ackOptions = z.object({
  deadMaxLen: z.number().int().min(1).default(10_000).describe("most dead letters kept in the dead-letter stream"),
  deadMaxAgeS: z
    .number()
    .int()
    .min(0)
    .default(2_592_000)
    .describe("dead letters older than this many seconds are trimmed (0 = no age limit)"),
});

export interface AckDeps {
  redis: Redis;
  keys: RedisKeys;
  group: string;
  consumer: string;
}

export function ackStage(deps: AckDeps): StageSpec<WrittenBatch, AckedBatch, typeof ackOptions> {
  const { redis, keys, group } = deps;
  const ackKeys = { raw: keys.raw, dead: keys.dead, stats: keys.stats(deps.consumer), deadCauses: keys.deadCauses };
  return {
    name: "ack",
    consumes: WRITTEN_BATCH,
    emits: ACKED,
    sequential: true,
    options: ackOptions,
    failure: {
      // every Redis failure is retried: the script is idempotent, and not acknowledging loses nothing
      classify: () => "retry",
      describe: (err) => `redis: ${(err as Error).message}`,
      backoff: { baseMs: 100, maxMs: 5_000 },
    },
    create(_ctx, options) {
      const counters = { acked: 0, deadStored: 0, deadCounted: 0, deadTrimmed: 0 };
      const limits = { maxLen: options.deadMaxLen, maxAgeS: options.deadMaxAgeS };
      return {
        counters: () => ({ ...counters }),
        async process(batch, written) {
          try {
            const r = await ackBatch(redis, ackKeys, group, limits, batch, written.inserted);
            counters.acked += r.acked;
            counters.deadStored += r.stored;
            counters.deadCounted += r.counted;
            counters.deadTrimmed += r.trimmed;
            return { acked: r.acked };
          } catch (err) {
            // the group vanished (Redis lost its data): re-create it; the retry's XACK is then a no-op
            if (isNoGroup(err)) await ensureGroup(redis, keys.raw, group);
            throw err;
          }
        },
      };
    },
  };
}
