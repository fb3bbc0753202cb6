import { describe, expect, it } from "vitest";
import { DEAD_REASONS, deadReason, retryClass } from "../../stages/worker-metrics.js";

// The bounded labels of can-worker's dead-letter and retry counters, from the
// reasons and errors the stages really produce.

describe("dead-letter reason labels", () => {
  it.each([
    [
      { reason: "delivered 6 times (limit 5) without an acknowledgement; not processed again", overLimit: true },
      "delivery_limit",
    ],
    [{ reason: "no message with id 0x7F0 in ops/cea.kcd", cause: "unknown-id:0x7F0" }, "unknown_id"],
    [{ reason: "Weird_N1 was refused: a signal outside the message", cause: "refused:0x123" }, "refused_message"],
    [{ reason: "no sensor for any signal of Spare_N9", cause: "unmapped:Spare_N9" }, "unmapped_message"],
    [{ reason: "rejected by the database: value out of range (22003)" }, "rejected_by_database"],
    [{ reason: "value of Climate_N1.dry_bulb is not finite" }, "not_finite"],
    [{ reason: "entry lacks ts, id or data" }, "malformed_entry"],
    [{ reason: "ts is not ISO 8601 UTC with microseconds" }, "malformed_entry"],
    [{ reason: "id is not a decimal 11-bit arbitration id (29-bit with ext=1)" }, "malformed_entry"],
    [{ reason: "data is not hex of at most 8 bytes (64 with fd=1)" }, "malformed_entry"],
    [{ reason: 'src "camera" is not socketcan, simulator or replay' }, "malformed_entry"],
    [{ reason: "Climate_N1 is 8 bytes, the frame has 4" }, "undecodable"],
  ])("%j → %s", (d, label) => {
    expect(deadReason(d)).toBe(label);
    expect(DEAD_REASONS).toContain(label);
  });
});

describe("retry SQLSTATE class labels", () => {
  it("the class of a PostgreSQL error, none for anything else", () => {
    expect(retryClass(Object.assign(new Error("read-only"), { code: "25006" }))).toBe("25");
    expect(retryClass(Object.assign(new Error("admin shutdown"), { code: "57P01" }))).toBe("57");
    expect(retryClass(Object.assign(new Error("refused"), { code: "ECONNREFUSED" }))).toBe("none");
    expect(retryClass(new Error("Redis is loading"))).toBe("none");
  });
});
