//! Built-in generators for the seeds' input data.

use crate::record::{FieldType, Row, RowSchema, Value};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// The six transactions of seed 000, in its order.
pub const BANK_SEED: [(i64, f64, f64); 6] = [
    (1001, 100.0, 1000.0),
    (1002, 200.0, 1000.0),
    (1003, 300.0, 300.0),
    (1004, 800.0, 1000.0),
    (1005, 500.0, 1000.0),
    (1006, 500.0, 2000.0),
];
pub const BANK_SEED_TIME_MS: i64 = 1_690_543_334_146;

/// Bank transactions as seed 000 describes them, shaped by the job's schema.
pub struct BankGenerator {
    rng: SmallRng,
    schema: RowSchema,
    idx: [usize; 5],
}

impl BankGenerator {
    pub fn new(schema: &RowSchema, seed: u64) -> Result<Self, String> {
        let find = |n: &str| {
            schema
                .index_of(n)
                .ok_or_else(|| format!("the bank schema has no field `{n}`"))
        };
        Ok(BankGenerator {
            rng: SmallRng::seed_from_u64(seed),
            schema: schema.clone(),
            idx: [
                find("account_id")?,
                find("time")?,
                find("withdraw")?,
                find("balance")?,
                find("bank_transaction_state")?,
            ],
        })
    }

    /// The same generator with a fresh random sequence.
    pub fn clone_seeded(&self, seed: u64) -> Self {
        BankGenerator {
            rng: SmallRng::seed_from_u64(seed),
            schema: self.schema.clone(),
            idx: self.idx,
        }
    }

    pub fn row(&self, account: i64, time: i64, withdraw: f64, balance: f64) -> (Vec<u8>, Row) {
        let mut row = vec![Value::Null; self.schema.fields.len()];
        row[self.idx[0]] = Value::Int(account);
        row[self.idx[1]] = Value::Int(time);
        row[self.idx[2]] = Value::Double(withdraw);
        row[self.idx[3]] = Value::Double(balance);
        row[self.idx[4]] = Value::Str("CREATED".into());
        (account.to_string().into_bytes(), row)
    }

    pub fn seed_records(&self) -> Vec<(Vec<u8>, Row)> {
        BANK_SEED
            .iter()
            .enumerate()
            .map(|(i, (a, w, b))| self.row(*a, BANK_SEED_TIME_MS + 10_000 * i as i64, *w, *b))
            .collect()
    }

    /// A random transaction; amounts in whole cents so the rule's outcome
    /// is exact. About a third of them are rejected.
    pub fn random(&mut self, time: i64) -> (Vec<u8>, Row) {
        let account = self.rng.random_range(1000..2000);
        let balance = self.rng.random_range(0..200_000) as f64 / 100.0;
        let withdraw = self.rng.random_range(1..150_000) as f64 / 100.0;
        self.row(account, time, withdraw, balance)
    }
}

/// Subway turnstile events (seed 003): each device of each station reports
/// every 10 s of event time, with the entries and exits since its last
/// report and its cumulative counters. A share of events is sent out of
/// order (up to 20 s early in the stream) and a share late (10 min old).
pub struct TurnstileGenerator {
    rng: SmallRng,
    stations: Vec<String>,
    devices_per_station: usize,
    totals: Vec<(i64, i64)>,
    start_ms: i64,
    out_of_order_share: f64,
    late_share: f64,
    index: [usize; 7],
    width: usize,
    next: u64,
}

/// The share of late turnstile events, and how far behind they are.
pub const TURNSTILE_LATE_MS: i64 = 600_000;

impl TurnstileGenerator {
    /// Event times begin at `start_ms` and go on 10 s per round of
    /// reports.
    pub fn new(
        schema: &RowSchema,
        seed: u64,
        start_ms: i64,
        stations: usize,
        devices_per_station: usize,
        out_of_order_share: f64,
        late_share: f64,
    ) -> Result<Self, String> {
        let find = |n: &str| {
            schema
                .index_of(n)
                .ok_or_else(|| format!("the turnstile schema has no field `{n}`"))
        };
        let names = [
            "station",
            "device",
            "entries",
            "exits",
            "entries_total",
            "exits_total",
            "event_time",
        ];
        let mut index = [0; 7];
        for (i, n) in names.iter().enumerate() {
            index[i] = find(n)?;
        }
        const STATIONS: [&str; 8] = [
            "59 ST",
            "42 ST-PORT AUTH",
            "TIMES SQ-42 ST",
            "GRD CNTRL-42 ST",
            "34 ST-HERALD SQ",
            "14 ST-UNION SQ",
            "FULTON ST",
            "CANAL ST",
        ];
        let stations: Vec<String> = (0..stations.max(1))
            .map(|i| {
                if i < STATIONS.len() {
                    STATIONS[i].to_string()
                } else {
                    format!("STATION {i}")
                }
            })
            .collect();
        let mut rng = SmallRng::seed_from_u64(seed);
        let totals = (0..stations.len() * devices_per_station.max(1))
            .map(|_| {
                (
                    rng.random_range(100_000..9_000_000),
                    rng.random_range(100_000..9_000_000),
                )
            })
            .collect();
        Ok(TurnstileGenerator {
            rng,
            stations,
            devices_per_station: devices_per_station.max(1),
            totals,
            start_ms,
            out_of_order_share,
            late_share,
            index,
            width: schema.fields.len(),
            next: 0,
        })
    }

    /// The event time of `row`, one this generator made.
    pub fn event_time(&self, row: &Row) -> i64 {
        match row[self.index[6]] {
            Value::Int(t) => t,
            _ => unreachable!("the generator sets every event time"),
        }
    }

    /// The next event, in the order a producer sends them.
    pub fn next_event(&mut self) -> (Vec<u8>, Row) {
        let devices = self.stations.len() * self.devices_per_station;
        let i = self.next;
        self.next += 1;
        let device = (i % devices as u64) as usize;
        let round = (i / devices as u64) as i64;
        let station = &self.stations[device / self.devices_per_station];
        let mut t = self.start_ms + round * 10_000 + (device as i64 * 10_000) / devices as i64;
        let roll: f64 = self.rng.random();
        if roll < self.late_share {
            t -= TURNSTILE_LATE_MS;
        } else if roll < self.late_share + self.out_of_order_share {
            t -= self.rng.random_range(1..20_000);
        }
        let entries = self.rng.random_range(0..25);
        let exits = self.rng.random_range(0..20);
        let totals = &mut self.totals[device];
        totals.0 += entries;
        totals.1 += exits;
        let mut row = vec![Value::Null; self.width];
        row[self.index[0]] = Value::Str(station.as_str().into());
        row[self.index[1]] = Value::Str(
            format!(
                "R{:03}-{:02}",
                device / self.devices_per_station,
                device % self.devices_per_station
            )
            .into(),
        );
        row[self.index[2]] = Value::Int(entries);
        row[self.index[3]] = Value::Int(exits);
        row[self.index[4]] = Value::Int(totals.0);
        row[self.index[5]] = Value::Int(totals.1);
        row[self.index[6]] = Value::Int(t);
        (station.as_bytes().to_vec(), row)
    }
}

/// How one field is generated, after Confluent datagen's `arg.properties`.
#[derive(Debug, Clone)]
enum Rule {
    Options(Vec<serde_json::Value>),
    Range { min: f64, max: f64 },
    Iteration { start: f64, step: f64 },
    Random,
}

/// Rows for any record schema whose fields may carry `arg.properties`
/// (`options`, `range`, `iteration`), as kafka-connect-datagen reads them.
pub struct AvroDatagen {
    schema: RowSchema,
    rules: Vec<Rule>,
    rng: SmallRng,
    n: u64,
    key: Option<usize>,
}

impl AvroDatagen {
    /// `text` is the schema JSON (with its `arg.properties`), `schema` the
    /// row schema it parses to.
    pub fn new(
        text: &str,
        schema: &RowSchema,
        key_field: Option<&str>,
        seed: u64,
    ) -> Result<Self, String> {
        let doc: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("schema is not JSON: {e}"))?;
        let fields = doc
            .get("fields")
            .and_then(|f| f.as_array())
            .ok_or("schema has no fields")?;
        let mut rules = Vec::new();
        for f in &schema.fields {
            let spec = fields
                .iter()
                .find(|x| x.get("name").and_then(|n| n.as_str()) == Some(f.name.as_str()));
            let props = spec
                .and_then(|s| s.get("type"))
                .and_then(|t| t.get("arg.properties"))
                .or_else(|| spec.and_then(|s| s.get("arg.properties")));
            let rule = match props {
                Some(p) if p.get("options").is_some() => Rule::Options(
                    p["options"]
                        .as_array()
                        .cloned()
                        .filter(|o| !o.is_empty())
                        .ok_or(format!("`{}`: options must be a non-empty list", f.name))?,
                ),
                Some(p) if p.get("range").is_some() => {
                    let r = &p["range"];
                    let min = r.get("min").and_then(|v| v.as_f64()).unwrap_or(0.0);
                    let max = r.get("max").and_then(|v| v.as_f64()).unwrap_or(min + 100.0);
                    Rule::Range { min, max }
                }
                Some(p) if p.get("iteration").is_some() => {
                    let it = &p["iteration"];
                    Rule::Iteration {
                        start: it.get("start").and_then(|v| v.as_f64()).unwrap_or(0.0),
                        step: it.get("step").and_then(|v| v.as_f64()).unwrap_or(1.0),
                    }
                }
                _ => Rule::Random,
            };
            rules.push(rule);
        }
        let key = match key_field {
            Some(k) => Some(
                schema
                    .index_of(k)
                    .ok_or(format!("key field `{k}` is not in the schema"))?,
            ),
            None => None,
        };
        Ok(AvroDatagen {
            schema: schema.clone(),
            rules,
            rng: SmallRng::seed_from_u64(seed),
            n: 0,
            key,
        })
    }

    pub fn next_row(&mut self) -> (Option<Vec<u8>>, Row) {
        let n = self.n;
        self.n += 1;
        let mut row = Vec::with_capacity(self.rules.len());
        for (f, rule) in self.schema.fields.iter().zip(&self.rules) {
            let v = match rule {
                Rule::Options(opts) => {
                    json_value(&opts[self.rng.random_range(0..opts.len())], f.ty)
                }
                Rule::Range { min, max } => match f.ty {
                    // Confluent's generator draws from [min, max).
                    FieldType::Int => Value::Int(
                        self.rng
                            .random_range(*min as i64..(*max as i64).max(*min as i64 + 1)),
                    ),
                    _ => Value::Double(self.rng.random_range(*min..max.max(min + f64::EPSILON))),
                },
                Rule::Iteration { start, step } => match f.ty {
                    FieldType::Int => Value::Int((start + step * n as f64) as i64),
                    FieldType::String => Value::Str(format!("{}", start + step * n as f64).into()),
                    _ => Value::Double(start + step * n as f64),
                },
                Rule::Random => match f.ty {
                    FieldType::Int => Value::Int(self.rng.random_range(0..1000)),
                    FieldType::Double => Value::Double(self.rng.random_range(0.0..1000.0)),
                    FieldType::Bool => Value::Bool(self.rng.random()),
                    FieldType::String => {
                        let s: String = (0..8)
                            .map(|_| (b'a' + self.rng.random_range(0..26)) as char)
                            .collect();
                        Value::Str(s.into())
                    }
                    FieldType::Bytes => Value::Bytes(
                        (0..8)
                            .map(|_| self.rng.random())
                            .collect::<Vec<u8>>()
                            .into(),
                    ),
                    FieldType::Null => Value::Null,
                },
            };
            row.push(v);
        }
        let key = self.key.map(|k| {
            let mut s = String::new();
            row[k].to_text(&mut s);
            s.into_bytes()
        });
        (key, row)
    }
}

fn json_value(v: &serde_json::Value, ty: FieldType) -> Value {
    match (v, ty) {
        (serde_json::Value::Number(n), FieldType::Int) => Value::Int(n.as_i64().unwrap_or(0)),
        (serde_json::Value::Number(n), FieldType::Double) => {
            Value::Double(n.as_f64().unwrap_or(0.0))
        }
        (serde_json::Value::Bool(b), _) => Value::Bool(*b),
        (serde_json::Value::String(s), _) => Value::Str(s.as_str().into()),
        (other, _) => Value::Str(other.to_string().into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::avro;

    const COMMERCIALS: &str = r#"{"type":"record","name":"commercialrating","fields":[
        {"name":"brand","type":{"type":"string","arg.properties":{"options":["Acme","Globex"]}}},
        {"name":"duration","type":{"type":"int","arg.properties":{"options":[30,45,60]}}},
        {"name":"rating","type":{"type":"int","arg.properties":{"range":{"min":1,"max":5}}}},
        {"name":"seq","type":{"type":"long","arg.properties":{"iteration":{"start":10,"step":5}}}}]}"#;

    #[test]
    fn arg_properties_shape_the_values() {
        let rows = avro::row_schema(&avro::parse_schema(COMMERCIALS).unwrap()).unwrap();
        let mut g = AvroDatagen::new(COMMERCIALS, &rows, Some("brand"), 1).unwrap();
        for i in 0..200 {
            let (key, row) = g.next_row();
            let Value::Str(brand) = &row[0] else { panic!() };
            assert!(brand == "Acme" || brand == "Globex");
            assert_eq!(key.unwrap(), brand.as_bytes());
            assert!(matches!(row[1], Value::Int(30 | 45 | 60)));
            assert!(matches!(row[2], Value::Int(1..=4)), "{:?}", row[2]);
            assert_eq!(row[3], Value::Int(10 + 5 * i));
        }
    }
}

/// Card payments (seed 001) as JSON, keyed by customer. A share of them is
/// malformed in one of the ways the seed's error table expects.
pub struct PaymentGenerator {
    rng: SmallRng,
    malformed_share: f64,
}

pub const MERCHANTS: [&str; 5] = ["Amazon", "Zalando", "MediaMarkt", "Lidl", "Ikea"];

impl PaymentGenerator {
    pub fn new(seed: u64, malformed_share: f64) -> Self {
        PaymentGenerator {
            rng: SmallRng::seed_from_u64(seed),
            malformed_share,
        }
    }

    pub fn next_payment(&mut self, time: i64) -> (Vec<u8>, Vec<u8>) {
        let customer = format!("C{:04}", self.rng.random_range(0..1000));
        let merchant = MERCHANTS[self.rng.random_range(0..MERCHANTS.len())];
        let amount = self.rng.random_range(100..50_000) as f64 / 100.0;
        let good = format!(
            r#"{{"customer":"{customer}","merchant":"{merchant}","amount":{amount:?},"currency":"EUR","timestamp":{time}}}"#
        );
        let value = if self.rng.random::<f64>() < self.malformed_share {
            match self.rng.random_range(0..4) {
                0 => good[..good.len() / 2].to_string(),
                1 => format!(
                    r#"{{"customer":"{customer}","merchant":"{merchant}","currency":"EUR","timestamp":{time}}}"#
                ),
                2 => good.replace(
                    &format!("\"amount\":{amount:?}"),
                    &format!("\"amount\":\"{amount}\""),
                ),
                _ => good.replace(
                    &format!("\"amount\":{amount:?}"),
                    &format!("\"amount\":-{amount:?}"),
                ),
            }
        } else {
            good
        };
        (customer.into_bytes(), value.into_bytes())
    }
}
