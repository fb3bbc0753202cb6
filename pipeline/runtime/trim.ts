import { readFileSync } from "node:fs";
import type { Redis } from "ioredis";
import { projectPath } from "./paths.js";

// Loader for pipeline/runtime/trim.lua (its contract is at the top of that file).

export interface TrimResult {
  length: number;
  trimmedAcked: number;
  droppedUnacked: number;
  boundary: string;
  /** Entries at or after the boundary: not yet acknowledged by some group (exact). */
  backlog: number;
}

const SCRIPT = "pipeline/runtime/trim.lua";

export function loadTrimScript(): string {
  return readFileSync(projectPath(SCRIPT), "utf8");
}

/** Run the trim script (EVALSHA, falling back to EVAL once per connection). */
export async function trimStream(
  redis: Redis,
  lua: string,
  stream: string,
  statsKey: string,
  keep: number,
  hard: number,
): Promise<TrimResult> {
  const r = redis as Redis & {
    ceaTrim?: (...args: (string | number)[]) => Promise<[number, number, number, string, number]>;
  };
  if (!r.ceaTrim) redis.defineCommand("ceaTrim", { numberOfKeys: 2, lua });
  const [length, trimmedAcked, droppedUnacked, boundary, backlog] = await r.ceaTrim!(stream, statsKey, keep, hard);
  return { length, trimmedAcked, droppedUnacked, boundary, backlog };
}
