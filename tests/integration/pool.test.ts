import { afterAll, describe, expect, inject, it } from "vitest";
import { createPool } from "../../db/pool.js";

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
      const inFlight = c.query("SELECT pg_sleep(10)");
      await new Promise((r) => setTimeout(r, 200));
      await killer.query("SELECT pg_terminate_backend($1)", [pid]);
      await expect(inFlight).rejects.toMatchObject({ code: "57P01" });
      // the end of the connection follows the rejected query; an unhandled
      // 'error' event would have failed this run, the listener sees it instead
      for (let i = 0; i < 100 && errors.length === 0; i++) await new Promise((r) => setTimeout(r, 20));
      expect(errors).toContain("Connection terminated unexpectedly");
      c.release(true);
      expect((await watched.query("SELECT 1 AS one")).rows).toEqual([{ one: 1 }]);
    } finally {
      await watched.end();
    }
  });
});
