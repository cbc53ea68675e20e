CREATE FUNCTION f(a int) RETURNS int LANGUAGE sql
 BEGIN ATOMIC
 SELECT CASE WHEN a > 0 THEN 1 ELSE 0 END;
END;
SELECT E'it\'s;', U&'d\0061t', $t$ ; $t$, "we;ird""x";
/* a /* nested */ ; */
\connect db
