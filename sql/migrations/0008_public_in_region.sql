-- public_in_region: a public address of the provider's customers in the local region. AWS bills
-- it 0.01/GB on each side, even within a zone (aws.amazon.com/ec2/pricing/on-demand/, "Data
-- Transfer within the same AWS Region"). Other providers have no such category: their
-- customers' public addresses are internet. Keys already present are left alone.
INSERT INTO $db.price_list (provider, region, remote_region, category, direction, valid_from, price_per_gib, currency, inserted_at)
SELECT 'aws', '*', '*', 'public_in_region', direction, toDate('1970-01-01'), toDecimal64(0.01, 9), 'USD',
    toDateTime64('1970-01-01 00:00:00', 3, 'UTC')
FROM values('direction String', ('out'), ('in'))
WHERE ('aws', '*', '*', 'public_in_region', direction) NOT IN
    (SELECT provider, region, remote_region, category, direction FROM $db.price_list);
