-- Seed 004 in ksqlDB's own words: the count, mean duration and mean
-- rating of commercials per brand, as a table that emits its changes.
-- The stream lists no columns: as in ksqlDB, they come from the schema
-- the registry holds for the topic (`jobctl datagen commercials` puts it
-- there). The same job as commercials.toml.
--
--   jobctl datagen commercials --count 1000
--   jobctl submit jobs/commercials.sql --until-caught-up

SET 'processing.guarantee'='exactly_once';

CREATE OR REPLACE STREAM metrics_brand_stream
  WITH (
    KAFKA_TOPIC='commercials_avro',
    VALUE_FORMAT='AVRO'
  );

CREATE OR REPLACE TABLE metrics_per_brand AS
  SELECT brand,
         COUNT(*) AS cnt,
         AVG(duration) AS  duration_mean,
         AVG(rating) AS rating_mean
  FROM metrics_brand_stream
  GROUP BY brand
  EMIT CHANGES;
