import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { oldestUnackedAgeMs } from "../../pipeline/runtime/backlog.js";
import { testPrefix } from "../support/db.js";

// The age of the oldest entry the group has not acknowledged, on a real Redis:
// explicit entry ids give the entries known append times.

let redis: Redis;
const prefix = testPrefix();
const stream = `${prefix}can:raw`;
const T = 1_700_000_000_000;

beforeAll(async () => {
  redis = new Redis(inject("redisUrl"));
  for (let i = 0; i < 5; i++) await redis.xadd(stream, `${T + i * 1000}-0`, "n", String(i));
});
afterAll(async () => {
  await redis?.del(stream);
  redis?.disconnect();
});

describe("oldest unacknowledged entry", () => {
  it("no stream: 0", async () => {
    expect(await oldestUnackedAgeMs(redis, `${prefix}none`, "g", T)).toBe(0);
  });

  it("no group: the oldest entry", async () => {
    expect(await oldestUnackedAgeMs(redis, stream, "g", T + 10_000)).toBe(10_000);
  });

  it("nothing delivered yet: the first entry after the group's start", async () => {
    await redis.xgroup("CREATE", stream, "g", `${T + 1000}-0`);
    expect(await oldestUnackedAgeMs(redis, stream, "g", T + 10_000)).toBe(8_000);
  });

  it("delivered and pending: the oldest pending one", async () => {
    await redis.xreadgroup("GROUP", "g", "c", "COUNT", 2, "STREAMS", stream, ">");
    expect(await oldestUnackedAgeMs(redis, stream, "g", T + 10_000)).toBe(8_000);
    await redis.xack(stream, "g", `${T + 2000}-0`);
    // entry 3 pending, entry 4 undelivered: the pending one is older
    expect(await oldestUnackedAgeMs(redis, stream, "g", T + 10_000)).toBe(7_000);
    await redis.xack(stream, "g", `${T + 3000}-0`);
    expect(await oldestUnackedAgeMs(redis, stream, "g", T + 10_000)).toBe(6_000);
  });

  it("everything acknowledged: 0", async () => {
    await redis.xreadgroup("GROUP", "g", "c", "COUNT", 10, "STREAMS", stream, ">");
    await redis.xack(stream, "g", `${T + 4000}-0`);
    expect(await oldestUnackedAgeMs(redis, stream, "g", T + 10_000)).toBe(0);
  });
});
