-- gold.daily_sales: the day's orders and revenue per channel and currency.
-- Reads the view `silver_orders` (the live silver.orders partition for :partition).
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
WHERE order_date = :partition
GROUP BY order_date, channel, currency
