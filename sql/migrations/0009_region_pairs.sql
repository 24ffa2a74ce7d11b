-- Region pairs priced apart from the provider's cross-region default. AWS bills transfer between
-- US East (N. Virginia) and US East (Ohio) at 0.01/GB out, half its usual 0.02
-- (aws.amazon.com/ec2/pricing/on-demand/, "Data Transfer OUT From Amazon EC2 To" another
-- region). Shipped from 2026-12-01, so no month already metered is repriced by an upgrade.
-- Left alone: keys already present, and regions the user priced themselves (a row naming the
-- region), which a pair would otherwise override.
INSERT INTO $db.price_list (provider, region, remote_region, category, direction, valid_from, price_per_gib, currency, inserted_at)
SELECT 'aws', region, remote_region, 'cross_region', 'out', toDate('2026-12-01'), toDecimal64(0.01, 9), 'USD',
    toDateTime64('1970-01-01 00:00:00', 3, 'UTC')
FROM values('region String, remote_region String', ('us-east-1', 'us-east-2'), ('us-east-2', 'us-east-1'))
WHERE ('aws', region, remote_region, 'cross_region', 'out') NOT IN
    (SELECT provider, region, remote_region, category, direction FROM $db.price_list)
  AND ('aws', region, 'cross_region', 'out') NOT IN
    (SELECT provider, region, category, direction FROM $db.price_list WHERE region != '*');
