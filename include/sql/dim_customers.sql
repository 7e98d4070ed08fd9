-- dim.customers: the customers that changed in the hours :first to :last, as the dimension keeps them.
-- Reads the view `db_customers`: rows of the shop database's public.customers whose
-- updated_at is in those hours (an incremental extract through JDBC).
-- The library merges these rows into the live dimension by customer_id, newest updated_at
-- winning (Pipeline(publish=Merge(...)) in dags/dim_customers.py), so this SQL only shapes the
-- changes. :first and :last (both included; equal in a run of one hour) are bound by Spark as
-- the hours' starts (TIMESTAMPs).
SELECT
    customer_id,
    trim(name)                 AS name,
    lower(trim(email))         AS email,
    upper(trim(country))       AS country,
    lower(trim(tier))          AS tier,
    updated_at
FROM db_customers
WHERE updated_at >= :first
  AND updated_at < :last + INTERVAL 1 HOUR
