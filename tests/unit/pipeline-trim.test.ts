import type { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { createRedis } from "../../pipeline/runtime/redis.js";
import { appendEntries, ensureGroup, pendingCount, readGroup } from "../../pipeline/runtime/stream.js";
import { loadTrimScript, trimStream } from "../../pipeline/runtime/trim.js";
import { testPrefix } from "../support/db.js";

// pipeline/runtime/trim.lua on the real Redis of the stack.

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
  /** Consumer reads `read` entries and acks the first `ack` of them. */
  const consume = async (key: string, read: number, ack: number) => {
    await ensureGroup(redis, key, "g");
    const r = await readGroup(redis, key, "g", "c1", ">", read, null);
    if (ack) await redis.xack(key, "g", ...r.ids.slice(0, ack));
    return r.ids;
  };

  it("without a group nothing counts as acknowledged: nothing is trimmed below the hard limit", async () => {
    const s = await fresh(300);
    const r = await trimStream(redis, lua, s.key, s.stats, 50, 1_000);
    expect(r).toMatchObject({ length: 300, trimmedAcked: 0, droppedUnacked: 0, backlog: 300 });
    expect(await redis.xlen(s.key)).toBe(300);
  });

  it("keeps exactly `keep` acknowledged entries and every unacknowledged one", async () => {
    const s = await fresh(500);
    await consume(s.key, 400, 300); // 0..299 acked, 300..399 pending, 400..499 never delivered
    const r = await trimStream(redis, lua, s.key, s.stats, 50, 10_000);
    expect(r.boundary).toBe(s.ids[300]);
    expect(r.trimmedAcked).toBe(250);
    expect(r.length).toBe(250);
    expect(r.backlog).toBe(200); // 100 pending + 100 never delivered
    const left = await redis.xrange(s.key, "-", "+");
    expect(left.map(([id]) => id)).toEqual(s.ids.slice(250));
    expect(await pendingCount(redis, s.key, "g")).toBe(100);
    // a second run changes nothing
    expect(await trimStream(redis, lua, s.key, s.stats, 50, 10_000)).toMatchObject({ trimmedAcked: 0, backlog: 200 });
  });

  it("with everything acknowledged keeps the newest `keep` entries", async () => {
    const s = await fresh(200);
    await consume(s.key, 200, 200);
    const r = await trimStream(redis, lua, s.key, s.stats, 30, 10_000);
    expect(r).toMatchObject({ length: 30, trimmedAcked: 170, droppedUnacked: 0, boundary: "", backlog: 0 });
    expect((await redis.xrange(s.key, "-", "+")).map(([id]) => id)).toEqual(s.ids.slice(170));
  });

  it("the entry after last-delivered-id is the boundary when nothing is pending; the minimum over groups wins", async () => {
    const s = await fresh(100);
    await consume(s.key, 60, 60); // group g: 0..59 acked
    await redis.xgroup("CREATE", s.key, "h", s.ids[19]!); // group h: delivered up to 19 (nothing pending)
    const r = await trimStream(redis, lua, s.key, s.stats, 5, 10_000);
    expect(r.boundary).toBe(s.ids[20]);
    expect(r.trimmedAcked).toBe(15);
    expect(r.backlog).toBe(80); // not yet acknowledged by h
    expect((await redis.xrange(s.key, "-", "+", "COUNT", 1))[0]![0]).toBe(s.ids[15]);
  });

  it("past the hard limit trims exactly to it and counts exactly the unacknowledged entries removed", async () => {
    const s = await fresh(1_000);
    await consume(s.key, 400, 100); // 0..99 acked, 100..399 pending, 400.. undelivered
    // keep is large, so the acked entries are not trimmed by step 1: the hard limit removes 100 acked + 500 unacked
    const r = await trimStream(redis, lua, s.key, s.stats, 10_000, 400);
    expect(r).toMatchObject({ length: 400, trimmedAcked: 0, droppedUnacked: 500, backlog: 400 });
    expect(await redis.hget(s.stats, "dropped_hard_limit")).toBe("500");
    expect((await redis.xrange(s.key, "-", "+")).map(([id]) => id)).toEqual(s.ids.slice(600));
    // again past the limit by 7 unacked entries: counted on top
    await appendEntries(
      redis,
      s.key,
      Array.from({ length: 7 }, (_, i) => entry(i)),
    );
    const again = await trimStream(redis, lua, s.key, s.stats, 10_000, 400);
    expect(again).toMatchObject({ length: 400, droppedUnacked: 7, backlog: 400 });
    expect(await redis.hget(s.stats, "dropped_hard_limit")).toBe("507");
  });

  it("backlog: a healthy stream holds `keep` acknowledged entries, longer than the warning length, with a backlog of only its unacknowledged ones", async () => {
    const s = await fresh(1_300);
    await consume(s.key, 1_200, 1_195); // 1 195 acked, 5 pending, 100 never delivered
    const r = await trimStream(redis, lua, s.key, s.stats, 1_000, 100_000);
    expect(r).toMatchObject({ length: 1_105, trimmedAcked: 195, droppedUnacked: 0, backlog: 105 });
    // the backlog is exactly the entries at or after the boundary
    expect((await redis.xrange(s.key, r.boundary, "+")).length).toBe(105);
    // once the worker catches up, the backlog is 0 while the stream still holds `keep` entries
    const rest = await readGroup(redis, s.key, "g", "c1", ">", 1_000, null);
    await redis.xack(s.key, "g", ...s.ids.slice(1_195, 1_200), ...rest.ids);
    expect(await trimStream(redis, lua, s.key, s.stats, 1_000, 100_000)).toMatchObject({
      length: 1_000,
      backlog: 0,
      boundary: "",
    });
  });
});
