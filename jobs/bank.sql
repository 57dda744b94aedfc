-- Seed 000's split in SQL: transactions whose withdrawal is below the
-- balance are approved (the balance reduced), the others rejected. The
-- same job as bank.toml.
--
--   jobctl datagen bank --seed-records
--   jobctl submit jobs/bank.sql --until-caught-up

SET 'commit.interval.ms'='1000';

CREATE STREAM transactions (
    account_id BIGINT,
    time BIGINT,
    withdraw DOUBLE,
    balance DOUBLE,
    bank_transaction_state VARCHAR
  ) WITH (KAFKA_TOPIC='bank-transactions', VALUE_FORMAT='AVRO', PARTITIONS=2);

CREATE STREAM approved WITH (KAFKA_TOPIC='APPROVED') AS
  SELECT account_id, time, withdraw,
         balance - withdraw AS balance,
         'APPROVED' AS bank_transaction_state
  FROM transactions
  WHERE withdraw < balance;

CREATE STREAM rejected WITH (KAFKA_TOPIC='REJECTED') AS
  SELECT account_id, time, withdraw, balance,
         'REJECTED' AS bank_transaction_state
  FROM transactions
  WHERE NOT (withdraw < balance);
