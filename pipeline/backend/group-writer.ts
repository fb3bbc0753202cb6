import { classifyDbError } from "../../db/pg-errors.js";
import type { Queryable } from "../../db/pool.js";
import { getMeasurement, insertGroup, type StoredMeasurement } from "../../db/queries/measurement.js";
import type { Logger } from "../runtime/log.js";

export interface SingleReading {
  time: string;
  sensor_id: number;
  value: number;
  status: string | null;
}

/** What the database holds for a reading's key, and whether this reading put it there. */
export interface WriteOutcome {
  inserted: boolean;
  stored: StoredMeasurement;
}

interface Waiting {
  reading: SingleReading;
  /** Date.now() past which the request has had its answer: the reading is not written any more */
  expiresAt: number;
  resolve: (o: WriteOutcome) => void;
  reject: (err: unknown) => void;
}

/** The request gave up waiting (its deadline passed) before its reading left the queue: nothing was written. */
export class WriteExpired extends Error {
  override name = "WriteExpired";
}

export interface GroupWriterOptions {
  /** most readings in one statement */
  maxGroup?: number;
  /** groups being written at the same time (each holds one pooled connection) */
  maxInFlight?: number;
  /** told the size of each group statement (metrics) */
  onGroup?: (readings: number) => void;
}

/**
 * Group commit for the single-reading route. Each request waits for its own
 * commit anyway; a commit costs one WAL flush whatever its size, so the
 * readings that arrive while earlier groups are being written go together in
 * one statement (db/queries/measurement.ts insertGroup), and each request
 * gets its own outcome. A group starts as soon as a slot is free (after the
 * current turn of the event loop, so the requests parsed in it join), so an
 * idle server adds no delay; under load the group grows with the wait.
 *
 * A row the database rejects (a data or constraint error, db/pg-errors.ts)
 * fails the whole statement: the group is then retried one reading per
 * statement, so only that reading's request fails. Any other failure is an
 * outage and fails every waiting request with its error, written nothing.
 */
export class GroupWriter {
  private queue: Waiting[] = [];
  private inFlight = 0;
  private scheduled = false;
  private readonly maxGroup: number;
  private readonly maxInFlight: number;
  private readonly onGroup: ((readings: number) => void) | undefined;

  constructor(
    private readonly db: Queryable,
    private readonly log?: Logger,
    opts: GroupWriterOptions = {},
  ) {
    this.maxGroup = opts.maxGroup ?? 512;
    this.maxInFlight = opts.maxInFlight ?? 2;
    this.onGroup = opts.onGroup;
  }

  /**
   * Store one reading (resolves after COMMIT). A reading still queued at
   * `expiresAt` (its request already answered, e.g. 503 while the database
   * hangs) is dropped unwritten, so a long outage cannot pile up a queue of
   * writes nobody waits for.
   */
  write(reading: SingleReading, expiresAt = Number.POSITIVE_INFINITY): Promise<WriteOutcome> {
    return new Promise((resolve, reject) => {
      this.queue.push({ reading, expiresAt, resolve, reject });
      this.schedule();
    });
  }

  private schedule(): void {
    if (this.scheduled || this.inFlight >= this.maxInFlight || this.queue.length === 0) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      while (this.inFlight < this.maxInFlight && this.queue.length > 0) {
        const now = Date.now();
        const taken = this.queue.splice(0, this.maxGroup);
        const group = taken.filter((w) => w.expiresAt > now);
        for (const w of taken)
          if (w.expiresAt <= now) w.reject(new WriteExpired("the request's deadline passed before its write began"));
        if (group.length === 0) continue;
        this.inFlight++;
        // flush settles every request of the group itself and never rejects
        void this.flush(group).finally(() => {
          this.inFlight--;
          this.schedule();
        });
      }
    });
  }

  private async flush(group: Waiting[]): Promise<void> {
    let outcomes: Awaited<ReturnType<typeof insertGroup>>;
    const started = performance.now();
    this.onGroup?.(group.length);
    try {
      outcomes = await insertGroup(
        this.db,
        group.map((w) => w.reading),
      );
    } catch (err) {
      if (group.length === 1 || classifyDbError(err).kind === "outage") {
        for (const w of group) w.reject(err);
        return;
      }
      this.log?.debug({ rows: group.length, err }, "group commit failed; writing its readings one by one");
      // in arrival order, one after another: the first of two readings with the
      // same key must be the one stored, as in a group statement
      for (const w of group) await this.flush([w]);
      return;
    }
    this.log?.debug({ rows: group.length, ms: Math.round((performance.now() - started) * 100) / 100 }, "group commit");
    await Promise.all(
      group.map(async (w, i) => {
        try {
          const o = outcomes[i];
          if (o) {
            const { inserted, ...stored } = o;
            w.resolve({ inserted, stored });
            return;
          }
          // the key was taken before (or by a concurrent writer): read what is stored
          const stored = await getMeasurement(this.db, w.reading.sensor_id, w.reading.time);
          if (!stored)
            throw new Error(`insert of (${w.reading.sensor_id}, ${w.reading.time}) neither inserted nor found a row`);
          w.resolve({ inserted: false, stored });
        } catch (err) {
          w.reject(err);
        }
      }),
    );
  }
}
