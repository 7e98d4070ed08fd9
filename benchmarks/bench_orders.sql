-- The benchmark transform: pass the synthetic partition through unchanged.
SELECT * FROM synthetic_orders WHERE order_date = :partition
