import { readFile } from "node:fs/promises";
import { z } from "zod";
import { projectPath } from "../../pipeline/runtime/paths.js";

// The migration's options (one zod schema: the command and the tests parse the
// same thing) and the loader of its SQL files (db/migrate/*.sql).

export const migrateOptionsSchema = z.object({
  /** "table" or "schema.table" */
  table: z.string().min(1).default("can_messages"),
  /** default: the first of timestamp, created_at, time that exists */
  timeColumn: z.string().min(1).optional(),
  nodeColumn: z.string().min(1).default("node_id"),
  dataColumn: z.string().min(1).default("decoded_data"),
  /** default: message_type when the table has it */
  typeColumn: z.string().min(1).optional(),
  /** zone of a time column without time zone */
  legacyTimeZone: z.string().min(1).default("UTC"),
  /**
   * A local time the fall-back hour makes ambiguous: the first (daylight-time,
   * earlier) instant or the second. Default earlier, as RFC 5545 and
   * Temporal's "compatible" disambiguation do.
   */
  ambiguous: z.enum(["earlier", "later"]).default("earlier"),
  /**
   * batch length: <n>s, <n>m, <n>h or <n>d; each batch is one such window that
   * holds rows. Without it, batches are sized by rows (batchRows).
   */
  batch: z
    .string()
    .regex(/^[1-9][0-9]*[smhd]$/, "expected <n>s, <n>m, <n>h or <n>d, e.g. 1d or 6h")
    .optional(),
  /**
   * without --batch: legacy rows per batch (at most; fewer when the table is
   * small, so that every session gets several batches)
   */
  batchRows: z.number().int().positive().default(100_000),
  /** stop after this many batches (resume later); for staged runs and the interruption test */
  maxBatches: z.number().int().positive().optional(),
  dryRun: z.boolean().default(false),
  verifyOnly: z.boolean().default(false),
  /** delete what earlier runs of this source wrote (status 'migrated' rows in their range) and their checkpoints */
  undo: z.boolean().default(false),
  verify: z.boolean().default(true),
  skipUnmapped: z.boolean().default(false),
  skipUnknownKeys: z.boolean().default(false),
  /** run every batch again (idempotent) instead of resuming after the checkpoint */
  ignoreCheckpoint: z.boolean().default(false),
  workMem: z
    .string()
    .regex(/^[1-9][0-9]*(kB|MB|GB)$/)
    .default("128MB"),
  /** batches in flight at once, each on its own session (needs io.connect for more than 1) */
  parallel: z.number().int().min(1).max(8).default(2),
  /** attempts of a batch that lost a deadlock or serialization conflict to a concurrent writer */
  retries: z.number().int().min(0).max(20).default(5),
});
export type MigrateOptions = z.input<typeof migrateOptionsSchema>;
export type Options = z.infer<typeof migrateOptionsSchema>;

const UNITS: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };
export const DAY = 86_400_000;
export const HOUR = 3_600_000;
export function batchMs(batch: string): number {
  return Number(batch.slice(0, -1)) * UNITS[batch.slice(-1)]!;
}
export const iso = (ms: number): string => new Date(ms).toISOString();

const SQL_CACHE = new Map<string, string>();
/** The text of db/migrate/<name>.sql. */
export async function sql(name: string): Promise<string> {
  let text = SQL_CACHE.get(name);
  if (text === undefined) {
    text = await readFile(projectPath(`db/migrate/${name}.sql`), "utf8");
    SQL_CACHE.set(name, text);
  }
  return text;
}
