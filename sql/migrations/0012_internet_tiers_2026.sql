-- Internet egress as the providers' late-2026 list prices have it: monthly volume tiers with a
-- free allowance, per account (0011 says how tiers are counted). GiB boundaries: the providers'
-- "GB" of transfer is 2^30 bytes, and a TB is 1,024 of them.
--
-- * AWS (aws.amazon.com/ec2/pricing/on-demand/, "Data Transfer OUT From Amazon EC2 To Internet";
--   the free 100 GB a month, aws.amazon.com/free/): first 100 GB free, then 0.09 to 10 TB,
--   0.085 for the next 40 TB, 0.07 for the next 100 TB, 0.05 beyond 150 TB. AWS counts the
--   free 100 GB across all its services and regions; here it counts the account's metered bytes.
-- * GCP (cloud.google.com/vpc/network-pricing, "Internet data transfer", Premium Tier, to
--   destinations other than China and Australia): 0.12 to 1 TiB, 0.11 to 10 TiB, 0.08 beyond.
-- * Azure (azure.microsoft.com/pricing/details/bandwidth/, "Data transfer out to the internet",
--   routed over Microsoft's network, from North America and Europe): first 100 GB free, then
--   0.087 to 10 TB, 0.083 to 50 TB, 0.07 to 150 TB, 0.05 beyond.
--
-- Shipped from 2026-12-01, so no month already metered is repriced by an upgrade. A provider
-- whose default internet price someone set themselves (a '*' row inserted after the shipped
-- ones, which are dated 1970-01-01 00:00:00) keeps that price: nothing is inserted for it.
INSERT INTO $db.price_list (provider, region, remote_region, category, direction, valid_from, tier_from_gib, price_per_gib, currency, inserted_at)
SELECT provider, '*', '*', 'internet', 'out', toDate('2026-12-01'), tier_from_gib, toDecimal64(price, 9), 'USD',
    toDateTime64('1970-01-01 00:00:00', 3, 'UTC')
FROM values('provider String, tier_from_gib UInt64, price String',
    ('aws', 0, '0'), ('aws', 100, '0.09'), ('aws', 10240, '0.085'), ('aws', 51200, '0.07'),
    ('aws', 153600, '0.05'),
    ('gcp', 0, '0.12'), ('gcp', 1024, '0.11'), ('gcp', 10240, '0.08'),
    ('azure', 0, '0'), ('azure', 100, '0.087'), ('azure', 10240, '0.083'), ('azure', 51200, '0.07'),
    ('azure', 153600, '0.05'))
WHERE provider NOT IN
    (SELECT provider FROM $db.price_list
     WHERE region = '*' AND remote_region = '*' AND category = 'internet' AND direction = 'out'
       AND (inserted_at > toDateTime64('1970-01-01 00:00:00', 3, 'UTC') OR valid_from >= toDate('2026-12-01')));
