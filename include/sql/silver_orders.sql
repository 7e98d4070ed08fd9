-- silver.orders: one row per order placed on :partition, in its latest state.
-- Reads the view `landed_orders` (raw order events, possibly re-sent, possibly late).
-- :partition is bound by Spark as a DATE parameter, never pasted into the text.
WITH events AS (
    -- Re-sent events are exact copies: DISTINCT removes them.
    SELECT DISTINCT event_id, order_id, customer_id, event_ts, status, amount, currency, channel
    FROM landed_orders
    -- Events of the next day are in the view (late-data folder) and belong to its run.
    WHERE event_ts >= CAST(:partition AS TIMESTAMP)
      AND event_ts < CAST(:partition AS TIMESTAMP) + INTERVAL 1 DAY
)
SELECT
    order_id,
    CAST(:partition AS DATE)                           AS order_date,
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
GROUP BY order_id
