-- Seed 004's windowed table: brands rated more than three times in a
-- 5-second tumbling window of the records' timestamps. Without EMIT, each
-- window's row comes once, when the window closes (EMIT CHANGES would send
-- every change). The unnamed count is KSQL_COL_0, as ksqlDB names it. The
-- same job as commercials_windowed.toml.

CREATE OR REPLACE STREAM metrics_brand_stream
  WITH (
    KAFKA_TOPIC='commercials_avro',
    VALUE_FORMAT='AVRO'
  );

CREATE OR REPLACE TABLE metrics_per_brand_windowed AS
SELECT BRAND, count(*)
FROM metrics_brand_stream
WINDOW TUMBLING (SIZE 5 SECONDS)
GROUP BY BRAND
HAVING count(*) > 3;
