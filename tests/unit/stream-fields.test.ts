import { describe, expect, it } from "vitest";
import { FieldTable } from "../../pipeline/runtime/stream.js";
import { ID_BAD, LEN_BAD_DATA, LEN_BAD_TS, LEN_MISSING, layout, packEntries } from "../../stages/decode/pack.js";

// A read batch's fields as bytes (FieldTable) and decode's packing from them:
// the same verdicts the string fields had, bytes kept as they were read.

const ts = "2024-06-01T00:00:00.000000Z";

/** Message key slot and length slot of entry i of a packed batch. */
function slots(buf: ArrayBuffer, n: number, i: number) {
  const L = layout(n, 0);
  return { id: new Uint32Array(buf, L.ids, n)[i], len: new Uint8Array(buf)[L.lens + i] };
}

describe("FieldTable", () => {
  it("keeps each entry's fields and bytes; a deleted entry has none", () => {
    const odd = Buffer.from([0x68, 0xc3, 0xa9, 0x00, 0xff]); // not ASCII, not UTF-8 at the end
    const t = FieldTable.of([["ts", ts, "id", "256", "data", "0102"], null, [Buffer.from("note"), odd]]);
    expect(t.length).toBe(3);
    expect([t.deleted(0), t.deleted(1), t.deleted(2)]).toEqual([false, true, false]);
    expect(t.text(0, "id")).toBe("256");
    expect(t.text(0, "src")).toBeUndefined();
    expect(t.text(1, "ts")).toBeUndefined();
    expect(t.entry(1)).toBeNull();
    // a dead letter carries exactly the bytes that were read
    expect(t.entry(2)).toEqual([Buffer.from("note"), odd]);
    expect(t.entry(0)?.map((b) => b.toString())).toEqual(["ts", ts, "id", "256", "data", "0102"]);
  });

  it("packing from bytes gives the verdicts of the fields' text", () => {
    const entries = [
      ["ts", ts, "id", "1029", "data", "D2049427"], // good
      ["ts", ts, "id", "1029"], // no data
      ["ts", "2024-06-01T00:00:00.00000Z", "id", "1029", "data", "00"], // ts one digit short
      ["ts", ts, "id", "1029", "data", "0G"], // not hex
      ["ts", ts, "id", "1029", "data", "012"], // odd length
      ["ts", ts, "id", "1029", "data", "000102030405060708"], // 9 bytes without fd
      ["ts", ts, "id", "1029", "data", "000102030405060708", "fd", "1"], // CAN FD
      ["ts", ts, "id", "12a", "data", "00"], // id not decimal
      ["ts", ts, "id", "2048", "data", "00", "ext", "0"], // 11-bit id out of range
      ["ts", ts, "id", "2048", "data", "00", "ext", "x"], // ext neither 0 nor 1
    ];
    const t = FieldTable.of([...entries, ["ts", ts, "id", "1029", "data", "00"]]);
    const n = t.length;
    const { buf } = packEntries(t, (i) => i === n - 1);
    const got = entries.map((_, i) => slots(buf, n, i));
    expect(got[0]!.len).toBe(4);
    expect(got[0]!.id).not.toBe(ID_BAD);
    expect(got[1]!.len).toBe(LEN_MISSING);
    expect(got[2]!.len).toBe(LEN_BAD_TS);
    expect([got[3]!.len, got[4]!.len, got[5]!.len]).toEqual([LEN_BAD_DATA, LEN_BAD_DATA, LEN_BAD_DATA]);
    expect(got[6]!.len).toBe(9);
    expect([got[7]!.id, got[8]!.id, got[9]!.id]).toEqual([ID_BAD, ID_BAD, ID_BAD]);
    expect(slots(buf, n, n - 1).len).toBe(LEN_MISSING); // skipped: not decoded
    // the payload bytes themselves
    const L = layout(n, 0);
    const offs = new Uint32Array(buf, L.offs, n);
    expect([...new Uint8Array(buf, L.data + offs[0]!, 4)]).toEqual([0xd2, 0x04, 0x94, 0x27]);
  });
});
