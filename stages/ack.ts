import type { Redis } from "ioredis";
import type { RedisKeys } from "../pipeline/runtime/keys.js";
import type { StageSpec, WorkBatch } from "../pipeline/runtime/stage.js";
import { ensureGroup, isNoGroup } from "../pipeline/runtime/stream.js";

// ack: after COMMIT, in ONE MULTI: the dead letters of the batch (XADD to the
// dead stream with orig_id, reason, deliveries and the entry's own fields),
// XACK of exactly the batch's entries (written, dead-lettered, or deleted from
// the stream), and the worker's counters. Atomic, so a crash between COMMIT
// and this step only causes a redelivery that writes nothing new.

export async function ackBatch(
  redis: Redis,
  keys: RedisKeys,
  group: string,
  statsKey: string,
  batch: WorkBatch,
): Promise<void> {
  const m = redis.multi();
  for (const [i, reason] of batch.dead) {
    const fields = batch.fields[i] ?? [];
    const deliveries = String(batch.deliveries?.[i] ?? 1);
    m.xadd(keys.dead, "*", "orig_id", batch.ids[i]!, "reason", reason, "deliveries", deliveries, ...fields);
  }
  if (batch.ids.length) m.xack(keys.raw, group, ...batch.ids);
  m.hincrby(statsKey, "batches", 1);
  m.hincrby(statsKey, "entries", batch.ids.length);
  m.hincrby(statsKey, "rows_written", batch.inserted);
  if (batch.dead.size) m.hincrby(statsKey, "dead_lettered", batch.dead.size);
  const res = await m.exec();
  const failed = res?.find(([err]) => err);
  if (!res || failed) throw failed?.[0] ?? new Error("MULTI aborted");
}

export const ackDefaults = {};

export const ackStage: StageSpec<typeof ackDefaults> = {
  name: "ack",
  consumes: "committed-batch",
  emits: "acked",
  sequential: true,
  defaults: ackDefaults,
  failure: {
    unrecoverable: [],
    transient: ["Redis unreachable (ioredis reconnects; the ack is retried, it is idempotent)"],
    backoff: { baseMs: 100, maxMs: 5_000 },
    // every Redis failure here is retried: acking twice is harmless, not acking loses nothing
    classify: () => "transient",
  },
  create(ctx) {
    const statsKey = ctx.keys.stats(ctx.config.CEA_CONSUMER);
    return {
      async process(batch) {
        if (!batch.committed) throw new Error("ack before commit");
        try {
          await ackBatch(ctx.redis, ctx.keys, ctx.config.CEA_GROUP, statsKey, batch);
        } catch (err) {
          // the group vanished (Redis lost its data): re-create it; the retry's XACK is then a no-op
          if (isNoGroup(err)) await ensureGroup(ctx.redis, ctx.keys.raw, ctx.config.CEA_GROUP);
          throw err;
        }
      },
    };
  },
};
