import { describe, expect, it } from "vitest";
import {
  actualVapourPressure,
  airVpd,
  dewPoint,
  dewPointFromVapourPressure,
  leafVpd,
  saturationVapourPressure,
} from "../../pipeline/runtime/psychro.js";

// Reference values, each with its source and the tolerance it is checked to.

// FAO Irrigation and Drainage Paper 56 (Allen et al. 1998), chapter 3, worked
// examples, printed to 3 decimals (tolerance: half a unit of the last digit).
// Example 3: e°(24.5) = 3.075 kPa, e°(15) = 1.705 kPa (also reproduced by NCL's
// satvpr_temp_fao56 documentation). Example 5: e°(18) = 2.064, e°(25) = 3.168.
const FAO56_EXAMPLES: [number, number][] = [
  [24.5, 3.075],
  [15, 1.705],
  [18, 2.064],
  [25, 3.168],
];

// Thermodynamic reference: saturation vapour pressure of water (Wagner & Pruß,
// IAPWS-95), as tabulated in the CRC Handbook of Chemistry and Physics, "Vapor
// pressure of water from 0 to 370 °C", kPa. The Tetens formula is an
// approximation of these; the module documents "within 0.3 % from 0 to 40 °C"
// and this checks a tighter 0.2 % to 50 °C so a wrong constant cannot pass.
const IAPWS_KPA: [number, number][] = [
  [0, 0.61121],
  [10, 1.2282],
  [20, 2.3393],
  [25, 3.1699],
  [30, 4.247],
  [40, 7.3849],
  [50, 12.352],
];

describe("saturation vapour pressure (FAO-56 eq. 11, Tetens)", () => {
  it.each(FAO56_EXAMPLES)("e°(%s °C) = %s kPa (FAO-56 chapter 3 examples, ±0.0005)", (t, kpa) => {
    expect(Math.abs(saturationVapourPressure(t) - kpa)).toBeLessThanOrEqual(0.0005);
  });

  it.each(IAPWS_KPA)("e°(%s °C) is within 0.2 %% of the IAPWS-95 value %s kPa (CRC Handbook)", (t, kpa) => {
    expect(Math.abs(saturationVapourPressure(t) - kpa) / kpa).toBeLessThan(0.002);
  });

  it("rises monotonically over the range of a grow room", () => {
    let last = 0;
    for (let t = -10; t <= 45; t += 0.5) {
      const e = saturationVapourPressure(t);
      expect(e).toBeGreaterThan(last);
      last = e;
    }
  });
});

describe("actual vapour pressure and air VPD", () => {
  it("FAO-56 example 5: RH mean 68 % over e°(18) and e°(25) gives ea = 1.78 kPa (±0.005)", () => {
    // eq. 19 applied to the mean of the two saturation pressures, as the example does
    const ea = (actualVapourPressure(18, 68) + actualVapourPressure(25, 68)) / 2;
    expect(Math.abs(ea - 1.78)).toBeLessThanOrEqual(0.005);
  });

  it("air VPD = e°(T) − ea, by hand from the FAO-56 example values (±0.0005 kPa)", () => {
    // 25 °C, 60 %: 3.168 · 0.4 = 1.2672; 15 °C, 80 %: 1.705 · 0.2 = 0.341
    expect(Math.abs(airVpd(25, 60) - 1.2672)).toBeLessThanOrEqual(0.0005);
    expect(Math.abs(airVpd(15, 80) - 0.341)).toBeLessThanOrEqual(0.0005);
    expect(airVpd(22, 100)).toBe(0);
    expect(airVpd(22, 0)).toBeCloseTo(saturationVapourPressure(22), 12);
  });
});

describe("leaf VPD", () => {
  it("uses the leaf temperature for saturation and the air for the vapour present (±0.0005 kPa)", () => {
    // air 25 °C 60 %, leaf 2 °C cooler: e°(23) − 0.6 · e°(25); e°(23) by eq. 11 = 2.8094
    const expected = 2.8094 - 0.6 * 3.1678;
    expect(Math.abs(leafVpd(25, 60, -2) - expected)).toBeLessThanOrEqual(0.0005);
    expect(leafVpd(25, 60, 0)).toBeCloseTo(airVpd(25, 60), 12);
  });

  it("is negative when the leaf is below the dew point (condensation)", () => {
    const td = dewPoint(20, 90);
    expect(leafVpd(20, 90, td - 20 - 0.5)).toBeLessThan(0);
  });

  it("refuses an offset that is not a temperature difference, naming it", () => {
    expect(() => leafVpd(25, 60, Number.NaN)).toThrow(/leaf temperature offset/);
    expect(() => leafVpd(25, 60, 50)).toThrow(/leaf temperature offset/);
  });
});

describe("dew point (inverse of FAO-56 eq. 11; eq. 14: ea = e°(Tdew))", () => {
  it.each(FAO56_EXAMPLES)("a vapour pressure equal to e°(%s °C) = %s kPa has that dew point (±0.01 °C)", (t, kpa) => {
    // the printed kPa is rounded to 3 decimals; ±0.0005 kPa is < 0.01 °C here
    expect(Math.abs(dewPointFromVapourPressure(kpa) - t)).toBeLessThan(0.01);
  });

  it.each(IAPWS_KPA.filter(([t]) => t > 0 && t < 50))(
    "air holding the IAPWS-95 saturation pressure of %s °C has that dew point (±0.05 °C)",
    (t, kpa) => {
      // warmer air at the RH that gives this vapour pressure: independent of the formula's own table
      const air = t + 7;
      const rh = (100 * kpa) / saturationVapourPressure(air);
      expect(Math.abs(dewPoint(air, rh) - t)).toBeLessThan(0.05);
    },
  );

  it("equals the air temperature at 100 % RH and lies below it otherwise", () => {
    expect(dewPoint(21.3, 100)).toBeCloseTo(21.3, 9);
    for (const rh of [10, 40, 70, 99]) expect(dewPoint(21.3, rh)).toBeLessThan(21.3);
  });

  it("round-trips through e°: e°(dewPoint(T, RH)) = ea", () => {
    for (const [t, rh] of [
      [5, 30],
      [18, 55],
      [26, 72],
      [35, 90],
    ] as const)
      expect(saturationVapourPressure(dewPoint(t, rh))).toBeCloseTo(actualVapourPressure(t, rh), 10);
  });
});

describe("inputs outside the formula's domain are refused with the quantity named", () => {
  it.each([
    [() => saturationVapourPressure(Number.NaN), /temperature/],
    [() => saturationVapourPressure(-237.3), /temperature/],
    [() => airVpd(20, 101), /relative humidity/],
    [() => airVpd(20, -1), /relative humidity/],
    [() => dewPoint(20, 0), /relative humidity/],
    [() => dewPointFromVapourPressure(0), /vapour pressure/],
  ])("case %#", (f, message) => {
    expect(f).toThrow(RangeError);
    expect(f).toThrow(message);
  });
});
