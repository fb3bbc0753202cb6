import { afterAll, describe, expect, inject, it } from "vitest";
import { classifyDbError } from "../../db/pg-errors.js";
import { createPool, poolSettings } from "../../db/pool.js";
import { loadConfig } from "../../pipeline/runtime/config.js";
import { waitFor } from "./pipeline-helpers.js";

describe("the connection pool", () => {
  const killer = createPool(inject("databaseUrl"), { max: 1 });
  afterAll(async () => {
    await killer.end();
  });

  it("survives a connection that dies while checked out: the query rejects, the process lives on", async () => {
    const errors: string[] = [];
    const watched = createPool(inject("databaseUrl"), { max: 1, onError: (e) => errors.push(e.message) });
    try {
      const c = await watched.connect();
      const pid = (await c.query("SELECT pg_backend_pid() AS p")).rows[0].p;
      // the expectation is attached before anything can make the query fail
      const rejected = expect(c.query("SELECT pg_sleep(10)")).rejects.toMatchObject({ code: "57P01" });
      await waitFor("the query to run", async () => {
        const { rows } = await killer.query("SELECT state FROM pg_stat_activity WHERE pid = $1", [pid]);
        return rows[0]?.state === "active";
      });
      await killer.query("SELECT pg_terminate_backend($1)", [pid]);
      await rejected;
      // the end of the connection follows the rejected query; an unhandled
      // 'error' event would have failed this run, the listener sees it instead
      await waitFor("the error event", () => errors.length > 0, 5_000);
      expect(errors).toContain("Connection terminated unexpectedly");
      c.release(true);
      expect((await watched.query("SELECT 1 AS one")).rows).toEqual([{ one: 1 }]);
    } finally {
      await watched.end();
    }
  });

  it("queryTimeoutMs: a query without an answer that long fails as an outage and its connection goes; an idle one stays", async () => {
    const p = createPool(inject("databaseUrl"), { max: 1, queryTimeoutMs: 300 });
    const pidOf = async () => (await p.query<{ p: number }>("SELECT pg_backend_pid() AS p")).rows[0]?.p;
    try {
      const first = await pidOf();
      // idle in the pool past the limit: the same connection serves the next query
      await new Promise((r) => setTimeout(r, 600));
      expect(await pidOf()).toBe(first);
      // nothing arrives for longer than the limit (a server at work or frozen looks the same from here)
      const err = await p.query("SELECT pg_sleep(5)").then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(Error);
      expect((err as Error).message).toBe("no answer from the database within 300 ms");
      expect(classifyDbError(err).kind).toBe("outage");
      // that connection is not handed out again
      expect(await pidOf()).not.toBe(first);
      await killer.query("SELECT pg_cancel_backend($1)", [first]);
    } finally {
      await p.end();
    }
  });

  it("sets statement and lock timeouts on every connection (configurable)", async () => {
    const p = createPool(inject("databaseUrl"), { max: 1, statementTimeoutMs: 250, lockTimeoutMs: 150 });
    try {
      const { rows } = await p.query(
        "SELECT current_setting('statement_timeout') AS s, current_setting('lock_timeout') AS l",
      );
      expect(rows).toEqual([{ s: "250ms", l: "150ms" }]);
      await expect(p.query("SELECT pg_sleep(5)")).rejects.toMatchObject({ code: "57014" });
    } finally {
      await p.end();
    }
    // the services' pools: the CEA_PG_* settings with their defaults
    const d = createPool(inject("databaseUrl"), { max: 1, ...poolSettings(loadConfig({})) });
    try {
      const { rows } = await d.query(
        "SELECT current_setting('statement_timeout') AS s, current_setting('lock_timeout') AS l",
      );
      expect(rows).toEqual([{ s: "1min", l: "10s" }]);
    } finally {
      await d.end();
    }
  });
});
