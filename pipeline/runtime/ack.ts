import { readFileSync } from "node:fs";
import type { Redis } from "ioredis";
import { projectPath } from "./paths.js";
import type { Batch } from "./stage.js";

// Loader for pipeline/runtime/ack.lua (its contract is at the top of that file).

export interface AckKeys {
  raw: string;
  dead: string;
  stats: string;
  deadCauses: string;
}

export interface DeadLimits {
  /** Most entries kept in the dead-letter stream. */
  maxLen: number;
  /** Dead letters older than this are trimmed (0 = no age limit). */
  maxAgeS: number;
}

export interface AckResult {
  acked: number;
  /** Dead letters stored in full. */
  stored: number;
  /** Dead letters counted under their cause. */
  counted: number;
  /** Dead letters trimmed from the dead stream by the limits. */
  trimmed: number;
}

let script: string | null = null;

/** XACK every entry of the batch, with its dead letters, in one atomic, idempotent script. */
export async function ackBatch(
  redis: Redis,
  keys: AckKeys,
  group: string,
  limits: DeadLimits,
  batch: Batch,
  rowsWritten: number,
): Promise<AckResult> {
  const r = redis as Redis & { ceaAck?: (...args: (string | number)[]) => Promise<[number, number, number, number]> };
  if (!r.ceaAck) {
    script ??= readFileSync(projectPath("pipeline/runtime/ack.lua"), "utf8");
    redis.defineCommand("ceaAck", { numberOfKeys: 4, lua: script });
  }
  const args: (string | number)[] = [
    group,
    limits.maxAgeS > 0 ? `${Date.now() - limits.maxAgeS * 1000}-0` : "",
    limits.maxLen,
    rowsWritten,
    batch.dead.size,
  ];
  for (const [i, d] of batch.dead) {
    const fields = batch.fields[i] ?? [];
    args.push(batch.ids[i]!, d.reason, batch.deliveries?.[i] ?? 1, d.cause ?? "", fields.length, ...fields);
  }
  for (let i = 0; i < batch.ids.length; i++) if (!batch.dead.has(i)) args.push(batch.ids[i]!);
  const [acked, stored, counted, trimmed] = await r.ceaAck!(keys.raw, keys.dead, keys.stats, keys.deadCauses, ...args);
  return { acked, stored, counted, trimmed };
}
