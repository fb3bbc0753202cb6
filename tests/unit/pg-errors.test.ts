import { describe, expect, it } from "vitest";
import { classifyDbError, describeDbFailure, isDataError } from "../../db/pg-errors.js";
import { TransientError } from "../../pipeline/runtime/errors.js";

const pgError = (code: string, message = "boom") => Object.assign(new Error(message), { code });

describe("classifyDbError: data errors by allow-list", () => {
  it.each([
    ["22P02", "invalid text representation"],
    ["22003", "numeric value out of range"],
    ["22009", "invalid time zone displacement value"],
    ["23503", "foreign key violation"],
    ["23505", "unique violation"],
    ["23514", "check violation"],
  ])("%s (%s) is about the rows", (code) => {
    expect(classifyDbError(pgError(code)).kind).toBe("data");
    expect(isDataError(pgError(code))).toBe(true);
  });

  it.each([
    "25006", // read-only transaction
    "42501", // permission denied
    "42P01", // undefined table
    "42703", // undefined column
    "58P01", // extension library missing
    "57014", // statement timeout
    "55P03", // lock timeout
    "40P01", // deadlock
    "40001", // serialization failure
    "XX000", // internal error
    "08006", // connection failure
    "57P01", // admin shutdown
    "53100", // disk full
    "F0000", // config file error: a class nobody listed
    "HV000", // FDW error: a class nobody listed
  ])("%s is an outage, never bad data", (code) => {
    const f = classifyDbError(pgError(code));
    expect(f.kind).toBe("outage");
    expect(f.code).toBe(code);
    expect(isDataError(pgError(code))).toBe(false);
  });

  it("errors without a SQLSTATE are outages: sockets, the driver, anything unforeseen", () => {
    expect(classifyDbError(Object.assign(new Error("connect ECONNREFUSED"), { code: "ECONNREFUSED" })).kind).toBe(
      "outage",
    );
    expect(classifyDbError(new Error("Connection terminated unexpectedly")).kind).toBe("outage");
    expect(classifyDbError(new TypeError("x is undefined")).kind).toBe("outage");
    expect(classifyDbError("a string").kind).toBe("outage");
    expect(classifyDbError(null).kind).toBe("outage");
    expect(classifyDbError(undefined).kind).toBe("outage");
  });

  it("a TransientError wrapping a data error is still an outage, and keeps the inner code", () => {
    const wrapped = Object.assign(new TransientError("database unavailable"), { cause: pgError("22P02") });
    expect(classifyDbError(wrapped)).toMatchObject({ kind: "outage", code: "22P02" });
  });

  it("names the condition for health and logs", () => {
    const f = classifyDbError(pgError("25006", "cannot execute INSERT in a read-only transaction"));
    expect(describeDbFailure(f)).toBe(
      "25006 read-only transaction (database is read-only): cannot execute INSERT in a read-only transaction",
    );
    expect(classifyDbError(pgError("HV000")).what).toBe("SQLSTATE class HV");
  });
});
