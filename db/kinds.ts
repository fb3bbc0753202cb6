// The sensor kinds the platform knows: what a sensor measures (quantity) and
// the unit its readings are stored in. The same rows are in the schema's
// sensor_kind table (migration 0004_sensor_kind; tests/integration/sensor-kinds.test.ts
// keeps the two equal). Dashboards, the API and the alert conditions select
// sensors by kind; a new kind is a new migration and a line here.

export interface SensorKind {
  quantity: string;
  unit: string;
  description: string;
}

export const SENSOR_KINDS = {
  air_temperature: { quantity: "temperature", unit: "°C", description: "dry-bulb air temperature" },
  wet_bulb_temperature: { quantity: "temperature", unit: "°C", description: "wet-bulb temperature" },
  dew_point: { quantity: "temperature", unit: "°C", description: "dew point of the air" },
  leaf_temperature: { quantity: "temperature", unit: "°C", description: "leaf (canopy) surface temperature" },
  substrate_temperature: { quantity: "temperature", unit: "°C", description: "root-zone substrate temperature" },
  relative_humidity: { quantity: "relative humidity", unit: "%", description: "relative humidity of the air" },
  co2: { quantity: "CO2 concentration", unit: "ppm", description: "CO2 in the air" },
  air_vpd: { quantity: "vapour pressure deficit", unit: "kPa", description: "vapour pressure deficit of the air" },
  leaf_vpd: {
    quantity: "vapour pressure deficit",
    unit: "kPa",
    description: "vapour pressure deficit between leaf and air",
  },
  par: {
    quantity: "photosynthetic photon flux density",
    unit: "µmol/m²/s",
    description: "PAR light at the canopy (PPFD)",
  },
  substrate_moisture: {
    quantity: "volumetric water content",
    unit: "%",
    description: "water content of the substrate",
  },
  wind_speed: { quantity: "wind speed", unit: "m/s", description: "outside wind speed" },
  air_pressure: { quantity: "air pressure", unit: "hPa", description: "barometric pressure" },
  state: { quantity: "on/off state", unit: "", description: "an output or status flag: 1 = on, 0 = off" },
} as const satisfies Record<string, SensorKind>;

export type SensorKindName = keyof typeof SENSOR_KINDS;
export const SENSOR_KIND_NAMES = Object.keys(SENSOR_KINDS) as [SensorKindName, ...SensorKindName[]];
