-- gold.daily_sales: each day's orders and revenue per channel and currency, days :first to :last.
-- Reads the view `silver_orders` (the live silver.orders partitions of those days).
-- :first and :last (both included; equal in a run of one day) are bound by Spark as DATEs.
SELECT
    order_date,
    channel,
    currency,
    count(*)                                                        AS orders,
    count_if(status IN ('paid', 'shipped'))                         AS paid_orders,
    count_if(status = 'cancelled')                                  AS cancelled_orders,
    CAST(coalesce(sum(CASE WHEN status <> 'cancelled' THEN amount END), 0) AS DECIMAL(18, 2)) AS revenue,
    count(DISTINCT customer_id)                                     AS customers
FROM silver_orders
WHERE order_date BETWEEN :first AND :last
GROUP BY order_date, channel, currency
