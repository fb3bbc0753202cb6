import type { Redis } from "ioredis";
import { z } from "zod";
import { isSubnormal } from "../db/readings.js";
import type { CanFrame, FrameSource, FrameSrc } from "../pipeline/can/frame.js";
import type { DecodeTable } from "../pipeline/can/table.js";
import type { RedisKeys } from "../pipeline/runtime/keys.js";
import { atMost } from "../pipeline/runtime/retry.js";
import type { ChunkSource, SourceEnvelope } from "../pipeline/runtime/scanner.js";
import { port, type StageSpec } from "../pipeline/runtime/stage.js";
import { CAN_ENTRIES, type CanEntry } from "./append/entry.js";
import type { IngestLedger } from "./append/ledger.js";
import { decodeFrame } from "./decode.js";

// can-ingest, the scanner chain's first stage: the frames of one chunk of the
// source → raw-stream entries that say where they came from (`src`), in order.
// It decodes every frame inline for the live values only: the live hash gets
// the newest value of each sensor at most once per `liveEveryMs` (one HSET of
// many fields). A frame it cannot decode is counted and passed on anyway (the
// worker dead-letters it with the reason). Appending is stream-append's job.

/** Frames as the source delivers them, one chunk at a time. */
export const CAN_FRAMES = port<CanFrame[]>("can-frames");

/** A live bus (SocketCAN) stopped delivering frames: the scanner exits non-zero and systemd restarts it. */
export class BusEndedError extends Error {
  override name = "BusEndedError";
}

/**
 * A frame source as the scanner runtime's source: the end of a live bus is a
 * failure (BusEndedError), the end of a simulation or replay is the end.
 */
export function frameChunks(source: FrameSource): ChunkSource<CanFrame[]> {
  return {
    name: source.name,
    pausable: source.pausable,
    chunks: () => source.frames(),
    close: () => source.close(),
    ended: () =>
      source.src === "socketcan"
        ? new BusEndedError(
            `${source.name}: the CAN interface stopped delivering frames (down or removed); exiting so that the service is restarted`,
          )
        : null,
  };
}

export const canIngestOptions = z.object({
  liveEveryMs: z.number().int().min(10).default(1_000).describe("live hash update interval (ms)"),
  finalStepMs: z.number().int().min(0).default(1_500).describe("on stop: the last live hash write (ms)"),
});

export interface CanIngestDeps {
  redis: Redis;
  keys: RedisKeys;
  /** The table the live values are decoded with (the CAN database checked against the site file). */
  table: DecodeTable;
  /** Where the source's frames come from; every entry says it. */
  src: FrameSrc;
  ledger: IngestLedger;
}

export function canIngestStage(
  deps: CanIngestDeps,
): StageSpec<CanFrame[], CanEntry[], typeof canIngestOptions, SourceEnvelope> {
  return {
    name: "can-ingest",
    consumes: CAN_FRAMES,
    emits: CAN_ENTRIES,
    options: canIngestOptions,
    failure: {
      // an undecodable frame is counted, not thrown: a thrown error is a fault of the scanner itself
      classify: () => "fatal",
      describe: (err) => `can-ingest failed: ${(err as Error).message}`,
      backoff: { baseMs: 100, maxMs: 5_000 },
    },
    create(ctx, o) {
      const { redis, keys, table, src, ledger } = deps;
      const live = new Map<number, string>();
      const noteLive = (f: CanFrame) => {
        try {
          const { values } = decodeFrame(table, f.id, f.data, f.ext ?? false);
          for (const v of values)
            live.set(
              v.signal.sensorId,
              JSON.stringify({
                value: v.value,
                time: f.ts,
                name: v.signal.sensorName,
                // as the worker stores it (db/readings.ts): control and the API read the live values
                status: v.outOfRange || isSubnormal(v.value) ? "out_of_range" : null,
              }),
            );
        } catch {
          ledger.stats.undecodable++;
        }
      };
      /** The newest value of every sensor that changed since the last call (one HSET). */
      const flushLive = async () => {
        if (live.size === 0) return;
        const fields: string[] = [];
        for (const [id, v] of live) fields.push(String(id), v);
        live.clear();
        await redis.hset(keys.live, ...fields);
      };
      // the round in flight, so that close() waits for it before the last write
      let inFlight: Promise<void> | null = null;
      const timer = setInterval(() => {
        if (redis.status !== "ready" || inFlight) return;
        inFlight = flushLive()
          .catch((err: Error) => ctx.log.warn({ err: err.message }, "live values update failed; next round retries"))
          .finally(() => {
            inFlight = null;
          });
      }, o.liveEveryMs);
      return {
        process(_env, frames) {
          const entries: CanEntry[] = new Array(frames.length);
          for (let i = 0; i < frames.length; i++) {
            const f = frames[i]!;
            noteLive(f);
            entries[i] = { f, src };
          }
          return entries;
        },
        counters: () => ({ undecodable: ledger.stats.undecodable, liveSensors: live.size }),
        async close() {
          clearInterval(timer);
          // a round still in flight took its values out of `live`: let it land before the last write and the exit.
          // Not only when "ready": a short replay can end before the connection is (the stream entries wait in the
          // appender), and the client's queue sends the write once it connects; atMost bounds it if Redis is down.
          if (redis.status !== "end")
            await atMost(
              (async () => {
                if (inFlight) await inFlight;
                await flushLive();
              })(),
              o.finalStepMs,
            );
        },
      };
    },
  };
}
