import { randomBytes } from "node:crypto";
import pg from "pg";
import { inject } from "vitest";
import type { ServiceRole } from "../../db/roles.js";
import { withDatabase } from "./global-setup.js";
import { roleUrl } from "./roles.js";

export interface TestDatabase {
  name: string;
  /** As the schema owner (the cluster's superuser in tests). */
  url: string;
  /** As one of the platform's service roles: each service connects with its own. */
  urlAs(client: ServiceRole): string;
  pool: pg.Pool;
  drop(): Promise<void>;
}

async function admin<T>(fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client({ connectionString: withDatabase(inject("databaseUrl"), "postgres") });
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

/**
 * A database of this test file's own: cloned from the template (schema applied,
 * site synced) or empty. Names are random so files can run in parallel.
 */
export async function createTestDatabase(opts: { empty?: boolean } = {}): Promise<TestDatabase> {
  const name = `cea_t_${randomBytes(5).toString("hex")}`;
  await admin(async (c) => {
    // CREATE DATABASE ... TEMPLATE fails if another session is connected to the
    // template; parallel files clone at the same time, so retry briefly.
    for (let attempt = 0; ; attempt++) {
      try {
        await c.query(
          opts.empty ? `CREATE DATABASE ${name}` : `CREATE DATABASE ${name} TEMPLATE ${inject("templateDb")}`,
        );
        return;
      } catch (err) {
        if (attempt > 50 || (err as { code?: string }).code !== "55006") throw err;
        await new Promise((r) => setTimeout(r, 100 + Math.random() * 100));
      }
    }
  });
  const url = withDatabase(inject("databaseUrl"), name);
  const pool = new pg.Pool({ connectionString: url, max: 5 });
  // an idle connection ended by the server (DROP DATABASE … WITH (FORCE), a restart) must not crash the run
  pool.on("error", () => undefined);
  return {
    name,
    url,
    urlAs: (client) => roleUrl(url, client),
    pool,
    async drop() {
      await pool.end();
      await admin((c) => c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`));
    },
  };
}

export const isCommunity = () => inject("edition") === "community";

/** A Redis key prefix of this test's own, so tests never see each other's streams. */
export function testPrefix(): string {
  return `t:${randomBytes(4).toString("hex")}:`;
}
