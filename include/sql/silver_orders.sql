-- silver.orders: one row per order and day, in its latest state, for the days :first to :last.
-- Reads the view `landed_orders` (raw order events, possibly re-sent, possibly late).
-- :first and :last (both included; equal in a run of one day) are bound by Spark as DATE
-- parameters, never pasted into the text. Each row's order_date is its partition, and a day's
-- rows depend on that day's events alone, so a run of many days gives each day what a run of
-- that day alone gives.
WITH events AS (
    -- Re-sent events are exact copies: DISTINCT removes them.
    SELECT DISTINCT event_id, order_id, customer_id, event_ts, status, amount, currency, channel
    FROM landed_orders
    -- Events of the day after :last are in the view (late-data folder) and belong to its run.
    WHERE event_ts >= CAST(:first AS TIMESTAMP)
      AND event_ts < CAST(:last AS TIMESTAMP) + INTERVAL 1 DAY
)
SELECT
    order_id,
    CAST(event_ts AS DATE)                             AS order_date,
    max(customer_id)                                   AS customer_id,
    -- Latest event wins; event_id breaks ties so the result is deterministic.
    max_by(status, struct(event_ts, event_id))         AS status,
    -- Only the `placed` event carries the amount; updates leave it null.
    CAST(max(amount) AS DECIMAL(12, 2))                AS amount,
    max(currency)                                      AS currency,
    coalesce(max(channel), 'unknown')                  AS channel,
    min(event_ts)                                      AS placed_ts,
    max(event_ts)                                      AS updated_ts,
    count(*)                                           AS event_count
FROM events
-- By day too: an order whose events fall on both sides of midnight is a row in each day.
GROUP BY CAST(event_ts AS DATE), order_id
