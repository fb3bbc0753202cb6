import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { projectRoot } from "./paths.js";

/**
 * The variables ops/stack.sh wrote (CEA_DATABASE_URL, CEA_REDIS_URL,
 * CEA_PG_BINDIR) for the local stack, under any the caller already set.
 * Used by the demo, the tests and the benchmarks; services under systemd get
 * their environment from the unit instead.
 */
export function withStackEnv(env: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  const file = join(env.CEA_STATE_DIR ?? join(projectRoot(), ".state"), "stack.env");
  const merged: NodeJS.ProcessEnv = {};
  if (existsSync(file)) {
    for (const line of readFileSync(file, "utf8").split("\n")) {
      const m = /^([A-Z0-9_]+)=(.*)$/.exec(line);
      if (m) merged[m[1]!] = m[2]!;
    }
  }
  for (const [k, v] of Object.entries(env)) if (v !== undefined && v !== "") merged[k] = v;
  return merged;
}
