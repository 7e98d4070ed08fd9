-- The backfill floor: include/sql/silver_orders.sql's logic over every day in one pass.
WITH events AS (
    SELECT DISTINCT event_id, order_id, customer_id, event_ts, status, amount, currency, channel
    FROM landed_orders
    WHERE order_id IS NOT NULL
)
SELECT
    order_id,
    CAST(min(event_ts) AS DATE)                        AS order_date,
    max(customer_id)                                   AS customer_id,
    max_by(status, struct(event_ts, event_id))         AS status,
    CAST(max(amount) AS DECIMAL(12, 2))                AS amount,
    max(currency)                                      AS currency,
    coalesce(max(channel), 'unknown')                  AS channel,
    min(event_ts)                                      AS placed_ts,
    max(event_ts)                                      AS updated_ts,
    count(*)                                           AS event_count
FROM events
GROUP BY order_id
