"""SQL queries covering the supported view grammar over r(a, b, t) and s(a, c, d).

Why here: the lowering parity test and the plan-codec round-trip test both need the same list,
and test modules do not import each other.
"""

from __future__ import annotations

PARITY_QUERIES: dict[str, str] = {
    "scalar_exprs": (
        "SELECT a, b + 1 AS b1, b * 2 > a, coalesce(b, -1), "
        "CASE WHEN a > 1 THEN 'big' WHEN a IS NULL THEN NULL ELSE 'small' END, 'b=' || b "
        "FROM r WHERE (a IS NOT NULL AND (b > 1 OR a = 0)) OR NOT (b = 2)"
    ),
    "in_list_between": "SELECT * FROM r WHERE a IN (1, 2, NULL) OR b BETWEEN 0 AND 2",
    "text_funcs": (
        "SELECT t, upper(t), lower(t), length(t), substr(t, 2), t || '!' FROM r "
        "WHERE t LIKE 'x%' OR t IS NULL OR t ILIKE 'y_'"
    ),
    "not_between_like_distinct_from": (
        "SELECT a, b, t FROM r WHERE b NOT BETWEEN 1 AND 3 AND t NOT LIKE '%a' "
        "AND a IS DISTINCT FROM 2"
    ),
    "conditional_funcs": (
        "SELECT nullif(a, 1), greatest(a, b), least(a, b, 2), "
        "CASE a WHEN 0 THEN 'zero' WHEN 1 THEN 'one' END, a IS NOT DISTINCT FROM b FROM r"
    ),
    "arith_casts": (
        "SELECT a, b / 2, b % 3, -b, b * d, d + 1, c - b, a / nullif(b, 0) "
        "FROM r JOIN s USING (a) WHERE b <> 0"
    ),
    "explicit_casts": (
        "SELECT CAST(b AS numeric(6,2)) / 4, CAST(b AS double precision) / 4, CAST(d AS int), "
        "abs(b), round(d, 1), floor(d), ceil(d), d * 1.5, CAST(c AS text) || t "
        "FROM r, s WHERE r.a = s.a"
    ),
    "inner_join": "SELECT r.a, r.b, s.c FROM r JOIN s ON r.a = s.a",
    "left_join_using_star": "SELECT * FROM r LEFT JOIN s USING (a)",
    "right_join_using": "SELECT a, b, c FROM r RIGHT JOIN s USING (a) WHERE c > 0",
    "full_join_residual": (
        "SELECT r.a, s.a, r.b, s.c FROM r FULL JOIN s ON r.a = s.a AND r.b < s.c"
    ),
    "natural_full_join": "SELECT * FROM r NATURAL FULL JOIN s",
    "self_join_comma": "SELECT x.a, y.b FROM r x, r y WHERE x.a = y.b AND x.b > 0",
    "cross_join_filter": "SELECT r.a, s.d FROM r CROSS JOIN s WHERE r.b < s.c",
    "left_join_where_right": (
        "SELECT r.a, r.t, s.c FROM r LEFT JOIN s ON r.a = s.a AND s.c > 1 WHERE s.d IS NULL"
    ),
    "group_all_aggs": (
        "SELECT a, count(*), count(b), sum(b), avg(b), min(t), max(b), count(DISTINCT b), "
        "bool_or(b > 2), bool_and(b > 0) FROM r GROUP BY a"
    ),
    "global_aggs": "SELECT count(*), sum(d), avg(d), min(d), max(c), sum(c), avg(c) FROM s",
    "join_group_having": (
        "SELECT s.c, count(*), sum(r.b) FROM r JOIN s ON r.a = s.a GROUP BY s.c HAVING count(*) > 1"
    ),
    "group_ordinal_filter": (
        "SELECT a % 2 AS parity, sum(b) FILTER (WHERE b > 0), count(*) FILTER (WHERE t = 'x') "
        "FROM r GROUP BY 1"
    ),
    "group_expr": (
        "SELECT coalesce(a, 0) + 1 AS k, count(DISTINCT t), sum(DISTINCT b) FROM r "
        "GROUP BY coalesce(a, 0) + 1"
    ),
    "distinct": "SELECT DISTINCT a, t FROM r",
    "union": "SELECT a FROM r UNION SELECT a FROM s",
    "union_all_widening": "SELECT b FROM r UNION ALL SELECT c FROM s",
    "except": "SELECT a FROM r EXCEPT SELECT a FROM s",
    "except_all": "SELECT a FROM r EXCEPT ALL SELECT a FROM s",
    "intersect": "SELECT a FROM r INTERSECT SELECT a FROM s",
    "intersect_all": "SELECT a FROM r INTERSECT ALL SELECT a FROM s",
    "topk": "SELECT a, b FROM r ORDER BY b DESC, a, t LIMIT 3 OFFSET 1",
    "topk_hidden_key": "SELECT t FROM r ORDER BY b, a NULLS FIRST, t LIMIT 2",
    "topk_grouped": "SELECT a, max(b) FROM r GROUP BY a ORDER BY max(b) DESC, a LIMIT 2",
    "topk_setop": "SELECT a FROM r UNION ALL SELECT a FROM s ORDER BY 1 LIMIT 4",
    "in_subquery": "SELECT a, t FROM r WHERE a IN (SELECT a FROM s WHERE c > 0)",
    "not_in_subquery": "SELECT a, b FROM r WHERE a NOT IN (SELECT c FROM s)",
    "exists_or_in": (
        "SELECT a, b FROM r WHERE EXISTS (SELECT 1 FROM s WHERE c > 2) OR b IN (SELECT c FROM s)"
    ),
    "in_subquery_select_list": (
        "SELECT b, b IN (SELECT c FROM s), NOT EXISTS (SELECT 1 FROM s) FROM r"
    ),
    "scalar_subqueries": (
        "SELECT a, b, (SELECT max(c) FROM s) AS mc FROM r WHERE b > (SELECT avg(c) FROM s)"
    ),
    "having_subquery": (
        "SELECT a, count(*) FROM r GROUP BY a HAVING count(*) >= (SELECT count(*) FROM s) - 1"
    ),
    "cte_left_join": (
        "WITH big AS (SELECT a, sum(b) AS sb FROM r GROUP BY a) "
        "SELECT big.a, big.sb, s.c FROM big LEFT JOIN s ON big.a = s.a AND big.sb > s.c"
    ),
    "derived_table": (
        "SELECT q.a, q.n FROM (SELECT a, count(*) AS n FROM r GROUP BY a) AS q WHERE q.n >= 2"
    ),
    "values_join": (
        "SELECT v.x, v.y, r.b FROM (VALUES (1, 'one'), (2, 'two')) AS v(x, y) JOIN r ON r.a = v.x"
    ),
    "union_in_from": (
        "SELECT u.a, u.b FROM (SELECT a, b FROM r UNION ALL SELECT a, c FROM s) AS u "
        "WHERE u.b IS NOT NULL"
    ),
    "generate_series": (
        "SELECT g, count(r.a) FROM generate_series(0, 3) AS g LEFT JOIN r ON r.a = g GROUP BY g"
    ),
}
