-- Seed 002's kappa pipeline in SQL: each line typed into `messages`
-- comes back on `responses` trimmed and upper-cased, with its characters
-- and words counted, as JSON. The same job as kappa.toml.
--
--   jobctl submit jobs/kappa.sql &
--   jobctl produce messages
--   jobctl tail responses

SET 'commit.interval.ms'='200';

CREATE STREAM messages (line VARCHAR)
  WITH (KAFKA_TOPIC='messages', VALUE_FORMAT='KAFKA');

CREATE STREAM responses WITH (KAFKA_TOPIC='responses', VALUE_FORMAT='JSON') AS
  SELECT UCASE(TRIM(line)) AS line,
         LEN(TRIM(line)) AS chars,
         WORD_COUNT(line) AS words
  FROM messages;
