from django.db import migrations

# A model call's terms, its reservation, its release and its record's spend as PostgreSQL functions: the statements inside are
# parsed and planned once per connection, where the same statements sent as text were parsed and
# planned at every call (about half of the reservation's time at the gateway). The same steps as
# usage.counters' ORM path; written out here, not imported, so that this migration keeps meaning
# what it meant when it ran.
FUNCTIONS = """
CREATE FUNCTION budget_hold(
    p_tenant text, p_run uuid, p_usd numeric, p_keys jsonb,
    p_levels text[], p_subjects text[], p_periods text[], p_usd_limits numeric[], p_call_limits bigint[]
) RETURNS TABLE (level text, subject text, period text, spent_usd numeric, calls bigint,
                 reserved_usd numeric, reserved_calls bigint, reservation bigint)
LANGUAGE plpgsql AS $$
BEGIN
    -- Locks the counters in key order and, only if one more call of p_usd fits every cap, adds it
    -- to each and records the reservation. Returns the counters as they were before; fewer rows than
    -- caps means some counters are still to be made (the reservation is then null).
    RETURN QUERY
    WITH caps AS (
        SELECT * FROM unnest(p_levels, p_subjects, p_periods, p_usd_limits, p_call_limits)
            AS cap(level, subject, period, usd_limit, call_limit)
    ), locked AS (
        SELECT c.id, c.level, c.subject, c.period, c.spent_usd, c.calls, c.reserved_usd, c.reserved_calls,
               caps.usd_limit, caps.call_limit
        FROM usage_budgetcounter c
        JOIN caps ON (c.level, c.subject, c.period) = (caps.level, caps.subject, caps.period)
        WHERE c.tenant_id = p_tenant
        ORDER BY c.level, c.subject, c.period
        FOR UPDATE OF c
    ), verdict AS (
        SELECT count(*) = cardinality(p_levels) AND bool_and(
            (locked.call_limit IS NULL OR locked.calls + locked.reserved_calls + 1 <= locked.call_limit)
            AND (locked.usd_limit IS NULL OR locked.spent_usd + locked.reserved_usd + p_usd <= locked.usd_limit)
        ) AS fits
        FROM locked
    ), held AS (
        UPDATE usage_budgetcounter AS c
        SET reserved_usd = c.reserved_usd + p_usd, reserved_calls = c.reserved_calls + 1, updated_at = now()
        FROM locked, verdict WHERE c.id = locked.id AND verdict.fits
    ), made AS (
        INSERT INTO usage_budgetreservation (run_id, usd, keys, created_at)
        SELECT p_run, p_usd, p_keys, now() FROM verdict WHERE verdict.fits
        RETURNING id
    )
    SELECT locked.level::text, locked.subject::text, locked.period::text, locked.spent_usd, locked.calls::bigint,
           locked.reserved_usd, locked.reserved_calls::bigint, (SELECT id FROM made)
    FROM locked;
END $$;

CREATE FUNCTION budget_give_back(p_reservation bigint, p_tenant text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    -- Deletes the reservation (once) and takes its share off the counters it held, locked in key order.
    WITH taken AS (
        DELETE FROM usage_budgetreservation WHERE id = p_reservation RETURNING usd, keys
    ), locked AS (
        SELECT c.id, taken.usd FROM usage_budgetcounter c, taken, jsonb_array_elements(taken.keys) AS key
        WHERE c.tenant_id = p_tenant AND (c.level, c.subject, c.period) = (key->>0, key->>1, key->>2)
        ORDER BY c.level, c.subject, c.period
        FOR UPDATE OF c
    )
    UPDATE usage_budgetcounter AS c
    SET reserved_usd = GREATEST(c.reserved_usd - locked.usd, 0),
        reserved_calls = GREATEST(c.reserved_calls - 1, 0), updated_at = now()
    FROM locked WHERE c.id = locked.id;
END $$;
"""

SETTLE = """
CREATE FUNCTION budget_settle(
    p_tenant text, p_usd numeric, p_levels text[], p_subjects text[], p_periods text[], p_reservation bigint
) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    -- Counts one recorded call of p_usd on the counters of the keys (made as needed, in key order),
    -- then gives its reservation back, if it had one.
    INSERT INTO usage_budgetcounter AS c
        (tenant_id, level, subject, period, spent_usd, calls, reserved_usd, reserved_calls, updated_at)
    SELECT p_tenant, k.level, k.subject, k.period, p_usd, 1, 0, 0, now()
    FROM unnest(p_levels, p_subjects, p_periods) AS k(level, subject, period)
    ORDER BY k.level, k.subject, k.period
    ON CONFLICT (tenant_id, level, subject, period) DO UPDATE
    SET spent_usd = c.spent_usd + excluded.spent_usd, calls = c.calls + 1, updated_at = excluded.updated_at;
    IF p_reservation IS NOT NULL THEN
        PERFORM budget_give_back(p_reservation, p_tenant);
    END IF;
END $$;
"""

TERMS = """
CREATE FUNCTION budget_terms(p_tenant text, p_user text, p_model text, p_moment timestamptz)
RETURNS TABLE (time_zone text, month_usd numeric, month_calls bigint, user_day_usd numeric, user_day_calls bigint,
               user_month_usd numeric, user_month_calls bigint, input_price numeric, cache_write_5m_price numeric,
               cache_write_1h_price numeric, output_price numeric)
LANGUAGE plpgsql STABLE AS $$
BEGIN
    -- What caps a call and what it is priced at: the tenant's time zone and limits (the end user's own
    -- in place of the tenant's defaults), and the model's prices in effect at p_moment (none: nulls).
    RETURN QUERY
    SELECT t.time_zone::text, t.monthly_budget_usd, t.monthly_budget_calls::bigint,
           COALESCE(u.daily_usd, t.user_daily_budget_usd), COALESCE(u.daily_calls, t.user_daily_budget_calls)::bigint,
           COALESCE(u.monthly_usd, t.user_monthly_budget_usd),
           COALESCE(u.monthly_calls, t.user_monthly_budget_calls)::bigint,
           p.input_price, p.cache_write_5m_price, p.cache_write_1h_price, p.output_price
    FROM tenants_tenant t
    LEFT JOIN usage_userbudget u ON u.tenant_id = t.id AND u.user_id = p_user
    LEFT JOIN LATERAL (
        SELECT mp.input_price, mp.cache_write_5m_price, mp.cache_write_1h_price, mp.output_price
        FROM tenants_modelprice mp
        WHERE mp.model_id = p_model AND mp.effective_from <= p_moment
        ORDER BY mp.effective_from DESC LIMIT 1
    ) p ON true
    WHERE t.id = p_tenant;
END $$;
"""

DROP_FUNCTIONS = """
DROP FUNCTION budget_terms(text, text, text, timestamptz);
DROP FUNCTION budget_settle(text, numeric, text[], text[], text[], bigint);
DROP FUNCTION budget_hold(text, uuid, numeric, jsonb, text[], text[], text[], numeric[], bigint[]);
DROP FUNCTION budget_give_back(bigint, text);
"""


def create_functions(apps, schema_editor):
    # Only PostgreSQL: elsewhere (the embedded SQLite) usage.counters takes the ORM's steps.
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(FUNCTIONS)
        schema_editor.execute(SETTLE)
        schema_editor.execute(TERMS)


def drop_functions(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP_FUNCTIONS)


class Migration(migrations.Migration):
    dependencies = [
        ("usage", "0004_rollup"),
    ]

    operations = [
        migrations.RunPython(create_functions, drop_functions),
    ]
