import type { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { createRedis } from "../../pipeline/runtime/redis.js";
import { appendEntries, ensureGroup, pendingCount, readGroup } from "../../pipeline/runtime/stream.js";
import { loadTrimScript, trimStream } from "../../pipeline/runtime/trim.js";
import { testPrefix } from "../support/db.js";

// pipeline/runtime/trim.lua on the real Redis of the stack. The stream is kept
// for the workers' group "g": acknowledged = delivered and no longer pending;
// held = pending; unread = not delivered yet.

const entry = (i: number) => ({ ts: "2024-01-01T00:00:00.000000Z", id: 0x101, data: i.toString(16).padStart(4, "0") });

describe("trim script", () => {
  let redis: Redis;
  const lua = loadTrimScript();
  beforeAll(() => {
    redis = createRedis(inject("redisUrl"));
  });
  const created: string[] = [];
  afterAll(async () => {
    if (created.length) await redis.del(...created);
    await redis.quit();
  });

  const fresh = async (n: number) => {
    const p = testPrefix();
    const key = `${p}can:raw`;
    const ids = await appendEntries(
      redis,
      key,
      Array.from({ length: n }, (_, i) => entry(i)),
    );
    created.push(key, `${p}stats:can-scanner`);
    return { key, stats: `${p}stats:can-scanner`, ids };
  };
  const trim = (s: { key: string; stats: string }, keep: number, hard: number) =>
    trimStream(redis, lua, { stream: s.key, statsKey: s.stats, group: "g", keep, hard });
  /** Consumer `c` of group g reads `read` new entries and acks the first `ack` of them. */
  const consume = async (key: string, read: number, ack: number, c = "c1") => {
    await ensureGroup(redis, key, "g");
    const r = await readGroup(redis, key, "g", c, ">", read, null);
    if (ack) await redis.xack(key, "g", ...r.ids.slice(0, ack));
    return r.ids;
  };
  const idsLeft = async (key: string) => (await redis.xrange(key, "-", "+")).map(([id]) => id);

  it("returns the whole result on every path, also for a stream that does not exist", async () => {
    const p = testPrefix();
    const r = await trim({ key: `${p}can:raw`, stats: `${p}stats:can-scanner` }, 50, 1_000);
    expect(r).toEqual({ length: 0, trimmedAcked: 0, droppedUnacked: 0, boundary: "", backlog: 0 });
  });

  it("without the group nothing counts as acknowledged: nothing is trimmed below the hard limit", async () => {
    const s = await fresh(300);
    const r = await trim(s, 50, 1_000);
    expect(r).toMatchObject({ length: 300, trimmedAcked: 0, droppedUnacked: 0, backlog: 300 });
    expect(await redis.xlen(s.key)).toBe(300);
  });

  it("keeps exactly `keep` acknowledged entries and every unacknowledged one", async () => {
    const s = await fresh(500);
    await consume(s.key, 400, 300); // 0..299 acked, 300..399 held, 400..499 unread
    const r = await trim(s, 50, 10_000);
    expect(r.boundary).toBe(s.ids[300]);
    expect(r.trimmedAcked).toBe(250);
    expect(r.length).toBe(250);
    expect(r.backlog).toBe(200); // 100 held + 100 unread
    expect(await idsLeft(s.key)).toEqual(s.ids.slice(250));
    expect(await pendingCount(redis, s.key, "g")).toBe(100);
    // a second run changes nothing
    expect(await trim(s, 50, 10_000)).toMatchObject({ trimmedAcked: 0, backlog: 200 });
  });

  it("with everything acknowledged keeps the newest `keep` entries", async () => {
    const s = await fresh(200);
    await consume(s.key, 200, 200);
    const r = await trim(s, 30, 10_000);
    expect(r).toMatchObject({ length: 30, trimmedAcked: 170, droppedUnacked: 0, boundary: "", backlog: 0 });
    expect(await idsLeft(s.key)).toEqual(s.ids.slice(170));
  });

  it("the entry after last-delivered-id is the boundary when nothing is held; another group does not hold the stream back", async () => {
    const s = await fresh(100);
    await consume(s.key, 60, 60); // group g: 0..59 acked
    await redis.xgroup("CREATE", s.key, "h", s.ids[19]!); // some other group, behind
    const r = await trim(s, 5, 10_000);
    expect(r.boundary).toBe(s.ids[60]);
    expect(r.trimmedAcked).toBe(55);
    expect(r.backlog).toBe(40);
    expect((await idsLeft(s.key))[0]).toBe(s.ids[55]);
  });

  it("past the hard limit: acknowledged entries go first, then the oldest unread ones, counted exactly; held entries stay", async () => {
    const s = await fresh(1_000);
    await consume(s.key, 400, 100); // 0..99 acked, 100..399 held, 400..999 unread
    // keep is large, so step 1 trims nothing: the hard limit removes the 100 acked and 500 unread entries
    const r = await trim(s, 10_000, 400);
    expect(r).toMatchObject({ length: 400, trimmedAcked: 0, droppedUnacked: 500, backlog: 400 });
    expect(await redis.hget(s.stats, "dropped_hard_limit")).toBe("500");
    expect(await idsLeft(s.key)).toEqual([...s.ids.slice(100, 400), ...s.ids.slice(900)]);
    // the worker still holds its 300 and acknowledges them after its commit
    expect(await pendingCount(redis, s.key, "g")).toBe(300);
    expect(await redis.xack(s.key, "g", ...s.ids.slice(100, 400))).toBe(300);
    // 7 more entries: the oldest acknowledged ones make room, nothing is counted
    await appendEntries(
      redis,
      s.key,
      Array.from({ length: 7 }, (_, i) => entry(i)),
    );
    const again = await trim(s, 10_000, 400);
    expect(again).toMatchObject({ length: 400, droppedUnacked: 0, trimmedAcked: 0 });
    expect(await redis.hget(s.stats, "dropped_hard_limit")).toBe("500");
  });

  it("entries a worker holds are never dropped, even when they alone exceed the hard limit", async () => {
    const s = await fresh(1_000);
    await consume(s.key, 900, 100); // 0..99 acked, 100..899 held, 900..999 unread
    const r = await trim(s, 10_000, 400);
    // 100 acked and the 100 unread entries go; the 800 held ones stay, above the limit
    expect(r).toMatchObject({ length: 800, droppedUnacked: 100, backlog: 800 });
    expect(await idsLeft(s.key)).toEqual(s.ids.slice(100, 900));
    expect(await redis.hget(s.stats, "dropped_hard_limit")).toBe("100");
  });

  it("entries another worker already acknowledged after a held batch are not counted as dropped", async () => {
    const s = await fresh(300);
    await ensureGroup(redis, s.key, "g");
    await readGroup(redis, s.key, "g", "c1", ">", 100, null); // c1 holds 0..99
    const second = await readGroup(redis, s.key, "g", "c2", ">", 100, null); // c2 committed 100..199
    await redis.xack(s.key, "g", ...second.ids);
    const r = await trim(s, 10_000, 150); // 200..299 unread
    expect(r.droppedUnacked).toBe(100);
    expect(await redis.hget(s.stats, "dropped_hard_limit")).toBe("100");
    expect(await idsLeft(s.key)).toEqual(s.ids.slice(0, 200));
  });

  it("backlog: a healthy stream holds `keep` acknowledged entries, longer than the warning length, with a backlog of only its unacknowledged ones", async () => {
    const s = await fresh(1_300);
    await consume(s.key, 1_200, 1_195); // 1 195 acked, 5 held, 100 unread
    const r = await trim(s, 1_000, 100_000);
    expect(r).toMatchObject({ length: 1_105, trimmedAcked: 195, droppedUnacked: 0, backlog: 105 });
    // the backlog is exactly the entries at or after the boundary
    expect((await redis.xrange(s.key, r.boundary, "+")).length).toBe(105);
    // once the worker catches up, the backlog is 0 while the stream still holds `keep` entries
    const rest = await readGroup(redis, s.key, "g", "c1", ">", 1_000, null);
    await redis.xack(s.key, "g", ...s.ids.slice(1_195, 1_200), ...rest.ids);
    expect(await trim(s, 1_000, 100_000)).toMatchObject({
      length: 1_000,
      backlog: 0,
      boundary: "",
    });
  });
});
