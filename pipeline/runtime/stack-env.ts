import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { projectRoot } from "./paths.js";

// The per-service connections stack.env names: they belong to the stack's
// database, so they are taken only together with its CEA_DATABASE_URL.
const ROLE_URLS = [
  "CEA_WORKER_DATABASE_URL",
  "CEA_API_DATABASE_URL",
  "CEA_READER_DATABASE_URL",
  "CEA_AUTOMATION_DATABASE_URL",
];

/**
 * The variables ops/stack.sh wrote (CEA_DATABASE_URL, CEA_REDIS_URL,
 * CEA_PG_BINDIR, the per-service database URLs) for the local stack
 * ($CEA_STATE_DIR/stack.env, default .state/stack.env of the checkout), under
 * any the caller already set. A caller who names another database
 * (CEA_DATABASE_URL) does not get the stack's per-service URLs: the services
 * then connect with the caller's, or fall back to CEA_DATABASE_URL, never to
 * the stack's database. Every command run from a checkout (cea,
 * migrate_to_normalized_schema, legacy-gen, the demo, the benchmarks, the
 * tests) finds the stack this one way; services under systemd get their
 * environment from the unit instead, and an installed appliance has no
 * stack.env.
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
  if (env.CEA_DATABASE_URL) for (const k of ROLE_URLS) delete merged[k];
  for (const [k, v] of Object.entries(env)) if (v !== undefined && v !== "") merged[k] = v;
  return merged;
}

/** A connection URL for display: its password replaced by "***". */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password === "") return url;
    u.password = "***";
    return u.toString();
  } catch {
    // not a URL we can parse: hide everything between "scheme://user:" and the last "@"
    return url.replace(/^([a-z][a-z0-9+.-]*:\/\/[^:/@]*):.*@/i, "$1:***@");
  }
}
