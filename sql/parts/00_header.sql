/* sql/wdc--0.1.0.sql: built by "make" from sql/parts/*.sql in name order */

-- complain if script is sourced in psql, rather than via CREATE EXTENSION
\echo Use "CREATE EXTENSION wdc" to load this file. \quit

-- The latent type, its operators and index opclasses live in the extension's
-- schema (@extschema@, default public) so that operators resolve without
-- qualification.  Model and data functions live in schema wdc.
CREATE SCHEMA wdc;
COMMENT ON SCHEMA wdc IS 'wdc model registry, FITS, encoding and flow functions';
GRANT USAGE ON SCHEMA wdc TO PUBLIC;
