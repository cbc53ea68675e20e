--
-- PostgreSQL database dump
--

\restrict yeEm4avtHZAczAaUb2nZJ8WOr3sOydNWbQCORpd5LMnpvTWgR5tCcBlvo6wVdLW

-- Dumped from database version 15.18 (Debian 15.18-0+deb12u1)
-- Dumped by pg_dump version 15.18 (Debian 15.18-0+deb12u1)

-- Started on 2026-11-26 11:10:23 UTC

SET statement_timeout = 0;
SET lock_timeout = 0;
SET idle_in_transaction_session_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);
SET check_function_bodies = false;
SET xmloption = content;
SET client_min_messages = warning;
SET row_security = off;

--
-- TOC entry 9 (class 2615 OID 16490)
-- Name: Tenant A; Type: SCHEMA; Schema: -; Owner: rdsadmin
-- Data Pos: 0
--

CREATE SCHEMA "Tenant A";


ALTER SCHEMA "Tenant A" OWNER TO rdsadmin;

--
-- TOC entry 8 (class 2615 OID 16489)
-- Name: app; Type: SCHEMA; Schema: -; Owner: app_owner_x1
-- Data Pos: 0
--

CREATE SCHEMA app;


ALTER SCHEMA app OWNER TO app_owner_x1;

--
-- TOC entry 296 (class 1255 OID 16654)
-- Name: c_handler(); Type: FUNCTION; Schema: public; Owner: rdsadmin
-- Data Pos: 0
--

CREATE FUNCTION public.c_handler() RETURNS language_handler
    LANGUAGE c
    AS '$libdir/plpgsql', 'plpgsql_call_handler';


ALTER FUNCTION public.c_handler() OWNER TO rdsadmin;

--
-- TOC entry 936 (class 2612 OID 16656)
-- Dependencies: 296
-- Name: plunsafe; Type: PROCEDURAL LANGUAGE; Schema: -; Owner: rdsadmin
-- Data Pos: 0
--

CREATE PROCEDURAL LANGUAGE plunsafe HANDLER public.c_handler;


ALTER PROCEDURAL LANGUAGE plunsafe OWNER TO rdsadmin;

--
-- TOC entry 3 (class 3079 OID 16619)
-- Name: adminpack; Type: EXTENSION; Schema: -; Owner: -
-- Data Pos: 0
--

CREATE EXTENSION IF NOT EXISTS adminpack WITH SCHEMA pg_catalog;


--
-- TOC entry 3488 (class 0 OID 0)
-- Dependencies: 3
-- Name: EXTENSION adminpack; Type: COMMENT; Schema: -; Owner: 
-- Data Pos: 0
--

COMMENT ON EXTENSION adminpack IS 'administrative functions for PostgreSQL';


--
-- TOC entry 2 (class 3079 OID 16491)
-- Name: hstore; Type: EXTENSION; Schema: -; Owner: -
-- Data Pos: 0
--

CREATE EXTENSION IF NOT EXISTS hstore WITH SCHEMA public;


--
-- TOC entry 3489 (class 0 OID 0)
-- Dependencies: 2
-- Name: EXTENSION hstore; Type: COMMENT; Schema: -; Owner: 
-- Data Pos: 0
--

COMMENT ON EXTENSION hstore IS 'key/value';


--
-- TOC entry 917 (class 1247 OID 16630)
-- Dependencies: 8
-- Name: order_status; Type: TYPE; Schema: app; Owner: app_owner_x1
-- Data Pos: 0
--

CREATE TYPE app.order_status AS ENUM (
    'new',
    'paid'
);


ALTER TYPE app.order_status OWNER TO app_owner_x1;

--
-- TOC entry 295 (class 1255 OID 16653)
-- Dependencies: 8
-- Name: secret(); Type: FUNCTION; Schema: app; Owner: app_owner_x1
-- Data Pos: 0
--

CREATE FUNCTION app.secret() RETURNS integer
    LANGUAGE sql SECURITY DEFINER
    AS $$ SELECT 42 $$;


ALTER FUNCTION app.secret() OWNER TO app_owner_x1;

--
-- TOC entry 297 (class 1255 OID 16655)
-- Name: add_int(integer, integer); Type: FUNCTION; Schema: public; Owner: rdsadmin
-- Data Pos: 0
--

CREATE FUNCTION public.add_int(integer, integer) RETURNS integer
    LANGUAGE internal IMMUTABLE
    AS $$int4pl$$;


ALTER FUNCTION public.add_int(integer, integer) OWNER TO rdsadmin;

--
-- TOC entry 299 (class 1255 OID 16662)
-- Name: audit_ddl(); Type: FUNCTION; Schema: public; Owner: rdsadmin
-- Data Pos: 0
--

CREATE FUNCTION public.audit_ddl() RETURNS event_trigger
    LANGUAGE plpgsql
    AS $$ BEGIN RAISE NOTICE 'ddl'; END $$;


ALTER FUNCTION public.audit_ddl() OWNER TO rdsadmin;

--
-- TOC entry 298 (class 1255 OID 16657)
-- Dependencies: 936
-- Name: unsafe_fn(); Type: FUNCTION; Schema: public; Owner: rdsadmin
-- Data Pos: 0
--

CREATE FUNCTION public.unsafe_fn() RETURNS integer
    LANGUAGE plunsafe
    AS $$ begin return 1; end $$;


ALTER FUNCTION public.unsafe_fn() OWNER TO rdsadmin;

SET default_tablespace = '';

SET default_table_access_method = heap;

--
-- TOC entry 220 (class 1259 OID 16643)
-- Dependencies: 9
-- Name: Order.Items; Type: TABLE; Schema: Tenant A; Owner: rdsadmin
-- Data Pos: 0
--

CREATE TABLE "Tenant A"."Order.Items" (
    id integer NOT NULL,
    order_id bigint
);


ALTER TABLE "Tenant A"."Order.Items" OWNER TO rdsadmin;

--
-- TOC entry 219 (class 1259 OID 16636)
-- Dependencies: 917 8 2 2 2 2 2 2
-- Name: orders; Type: TABLE; Schema: app; Owner: app_owner_x1
-- Data Pos: 0
--

CREATE TABLE app.orders (
    id bigint NOT NULL,
    status app.order_status,
    attrs public.hstore,
    "select" integer
);


ALTER TABLE app.orders OWNER TO app_owner_x1;

--
-- TOC entry 218 (class 1259 OID 16635)
-- Dependencies: 219 8
-- Name: orders_id_seq; Type: SEQUENCE; Schema: app; Owner: app_owner_x1
-- Data Pos: 0
--

ALTER TABLE app.orders ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME app.orders_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);


--
-- TOC entry 221 (class 1259 OID 16658)
-- Dependencies: 219 219 8 917
-- Name: v_orders; Type: VIEW; Schema: app; Owner: reader_x1
-- Data Pos: 0
--

CREATE VIEW app.v_orders AS
 SELECT orders.id,
    orders.status
   FROM app.orders;


ALTER TABLE app.v_orders OWNER TO reader_x1;

--
-- TOC entry 222 (class 1259 OID 16668)
-- Name: owned_by_master; Type: TABLE; Schema: public; Owner: postgres
-- Data Pos: 0
--

CREATE TABLE public.owned_by_master (
    id integer
);


ALTER TABLE public.owned_by_master OWNER TO postgres;

--
-- TOC entry 223 (class 1259 OID 16672)
-- Name: plain; Type: TABLE; Schema: public; Owner: postgres
-- Data Pos: 0
--

CREATE TABLE public.plain (
    id integer
);


ALTER TABLE public.plain OWNER TO postgres;

--
-- TOC entry 3331 (class 2606 OID 16647)
-- Dependencies: 220
-- Name: Order.Items Order.Items_pkey; Type: CONSTRAINT; Schema: Tenant A; Owner: rdsadmin
-- Data Pos: 0
--

ALTER TABLE ONLY "Tenant A"."Order.Items"
    ADD CONSTRAINT "Order.Items_pkey" PRIMARY KEY (id);


--
-- TOC entry 3328 (class 2606 OID 16642)
-- Dependencies: 219
-- Name: orders orders_pkey; Type: CONSTRAINT; Schema: app; Owner: app_owner_x1
-- Data Pos: 0
--

ALTER TABLE ONLY app.orders
    ADD CONSTRAINT orders_pkey PRIMARY KEY (id);


--
-- TOC entry 3329 (class 1259 OID 16667)
-- Dependencies: 219
-- Name: orders_status; Type: INDEX; Schema: app; Owner: app_owner_x1
-- Data Pos: 0
--

CREATE INDEX orders_status ON app.orders USING btree (status);


--
-- TOC entry 3332 (class 2606 OID 16648)
-- Dependencies: 219 3328 220
-- Name: Order.Items Order.Items_order_id_fkey; Type: FK CONSTRAINT; Schema: Tenant A; Owner: rdsadmin
-- Data Pos: 0
--

ALTER TABLE ONLY "Tenant A"."Order.Items"
    ADD CONSTRAINT "Order.Items_order_id_fkey" FOREIGN KEY (order_id) REFERENCES app.orders(id);


--
-- TOC entry 3476 (class 3256 OID 16671)
-- Dependencies: 219
-- Name: orders p; Type: POLICY; Schema: app; Owner: app_owner_x1
-- Data Pos: 0
--

CREATE POLICY p ON app.orders TO reader_x1 USING (true);


--
-- TOC entry 3486 (class 0 OID 0)
-- Dependencies: 9
-- Name: SCHEMA "Tenant A"; Type: ACL; Schema: -; Owner: rdsadmin
-- Data Pos: 0
--

GRANT USAGE ON SCHEMA "Tenant A" TO postgres;


--
-- TOC entry 3487 (class 0 OID 0)
-- Dependencies: 8
-- Name: SCHEMA app; Type: ACL; Schema: -; Owner: app_owner_x1
-- Data Pos: 0
--

GRANT USAGE ON SCHEMA app TO reader_x1;
GRANT USAGE ON SCHEMA app TO asset_reader_x1;


--
-- TOC entry 3490 (class 0 OID 0)
-- Dependencies: 220
-- Name: TABLE "Order.Items"; Type: ACL; Schema: Tenant A; Owner: rdsadmin
-- Data Pos: 0
--

GRANT SELECT ON TABLE "Tenant A"."Order.Items" TO postgres;


--
-- TOC entry 3491 (class 0 OID 0)
-- Dependencies: 219
-- Name: TABLE orders; Type: ACL; Schema: app; Owner: app_owner_x1
-- Data Pos: 0
--

GRANT SELECT ON TABLE app.orders TO reader_x1;
GRANT SELECT ON TABLE app.orders TO asset_reader_x1 WITH GRANT OPTION;
SET SESSION AUTHORIZATION asset_reader_x1;
GRANT SELECT ON TABLE app.orders TO "SuperUser Tool x1";
RESET SESSION AUTHORIZATION;


--
-- TOC entry 3492 (class 0 OID 0)
-- Dependencies: 219 3491
-- Name: COLUMN orders.id; Type: ACL; Schema: app; Owner: app_owner_x1
-- Data Pos: 0
--

GRANT SELECT(id) ON TABLE app.orders TO "we;ird_x1";


--
-- TOC entry 3493 (class 0 OID 0)
-- Dependencies: 222
-- Name: TABLE owned_by_master; Type: ACL; Schema: public; Owner: postgres
-- Data Pos: 0
--

GRANT ALL ON TABLE public.owned_by_master TO app_x1;


--
-- TOC entry 2158 (class 826 OID 16666)
-- Dependencies: 8
-- Name: DEFAULT PRIVILEGES FOR TABLES; Type: DEFAULT ACL; Schema: app; Owner: app_owner_x1
-- Data Pos: 0
--

ALTER DEFAULT PRIVILEGES FOR ROLE app_owner_x1 IN SCHEMA app GRANT SELECT ON TABLES  TO reader_x1;


--
-- TOC entry 3326 (class 3466 OID 16663)
-- Dependencies: 299
-- Name: audit_ddl; Type: EVENT TRIGGER; Schema: -; Owner: rdsadmin
-- Data Pos: 0
--

CREATE EVENT TRIGGER audit_ddl ON ddl_command_end
   EXECUTE FUNCTION public.audit_ddl();


ALTER EVENT TRIGGER audit_ddl OWNER TO rdsadmin;

-- Completed on 2026-11-26 11:10:23 UTC

--
-- PostgreSQL database dump complete
--

\unrestrict yeEm4avtHZAczAaUb2nZJ8WOr3sOydNWbQCORpd5LMnpvTWgR5tCcBlvo6wVdLW

