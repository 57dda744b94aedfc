//! Built-in generators for the seeds' input data.

use crate::record::{Row, RowSchema, Value};
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
        let find = |n: &str| schema.index_of(n).ok_or_else(|| format!("the bank schema has no field `{n}`"));
        Ok(BankGenerator {
            rng: SmallRng::seed_from_u64(seed),
            schema: schema.clone(),
            idx: [find("account_id")?, find("time")?, find("withdraw")?, find("balance")?, find("bank_transaction_state")?],
        })
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
