-- dim.customers: the customers that changed in the hour :partition, as the dimension keeps them.
-- Reads the view `db_customers`: rows of the shop database's public.customers whose
-- updated_at is in the hour (an incremental extract through JDBC).
-- The library merges these rows into the live dimension by customer_id, newest updated_at
-- winning (Pipeline(merge=Merge(...)) in dags/dim_customers.py), so this SQL only shapes one
-- hour's changes. :partition is bound by Spark as the hour's start (a TIMESTAMP).
SELECT
    customer_id,
    trim(name)                 AS name,
    lower(trim(email))         AS email,
    upper(trim(country))       AS country,
    lower(trim(tier))          AS tier,
    updated_at
FROM db_customers
WHERE updated_at >= :partition
  AND updated_at < :partition + INTERVAL 1 HOUR
