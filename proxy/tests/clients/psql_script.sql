\set ON_ERROR_STOP 0
CREATE TEMP TABLE ps(x int, y text); INSERT INTO ps VALUES (1, 'a'), (2, 'b') /*marker_psql_multi*/;
BEGIN;
INSERT INTO ps VALUES (3, 'c');
SELECT 1/0;
ROLLBACK;
\copy ps FROM 'COPYFILE'
\copy (SELECT * FROM ps ORDER BY x) TO 'OUTFILE'
SELECT x, y FROM ps ORDER BY x;
SELECT count(*) AS n FROM ps /*marker_psql_end*/;
