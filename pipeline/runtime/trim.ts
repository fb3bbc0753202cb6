import { readFileSync } from "node:fs";
import type { Redis } from "ioredis";
import { projectPath } from "./paths.js";

// Loader for pipeline/runtime/trim.lua (its contract is at the top of that file).

export interface TrimResult {
  length: number;
  trimmedAcked: number;
  /** Entries the group had not read yet, removed past the hard limit (each a lost frame). */
  droppedUnacked: number;
  boundary: string;
  /** Entries at or after the boundary: not yet acknowledged by the group (exact). */
  backlog: number;
}

export interface TrimTarget {
  stream: string;
  statsKey: string;
  /** The workers' consumer group: the stream is kept for it. */
  group: string;
  /** Acknowledged entries to keep. */
  keep: number;
  /** Most entries the stream may hold (entries in a worker's hands excepted). */
  hard: number;
}

const SCRIPT = "pipeline/runtime/trim.lua";

export function loadTrimScript(): string {
  return readFileSync(projectPath(SCRIPT), "utf8");
}

/** Run the trim script (EVALSHA, falling back to EVAL once per connection). */
export async function trimStream(redis: Redis, lua: string, t: TrimTarget): Promise<TrimResult> {
  const r = redis as Redis & {
    ceaTrim?: (...args: (string | number)[]) => Promise<[number, number, number, string, number]>;
  };
  if (!r.ceaTrim) redis.defineCommand("ceaTrim", { numberOfKeys: 2, lua });
  const [length, trimmedAcked, droppedUnacked, boundary, backlog] = await r.ceaTrim!(
    t.stream,
    t.statsKey,
    t.keep,
    t.hard,
    t.group,
  );
  return { length, trimmedAcked, droppedUnacked, boundary, backlog };
}
