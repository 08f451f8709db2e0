-- catalog checks: every wdc function has a comment and true labels

-- functions without a comment (expect none)
SELECT p.oid::regprocedure
FROM pg_proc p JOIN pg_depend d ON d.objid = p.oid AND d.classid = 'pg_proc'::regclass
JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'wdc'
WHERE d.deptype = 'e' AND obj_description(p.oid, 'pg_proc') IS NULL
ORDER BY 1::text;

-- latent functions are immutable, strict and parallel safe
SELECT p.proname, p.provolatile, p.proparallel, p.proisstrict
FROM pg_proc p JOIN pg_depend d ON d.objid = p.oid AND d.classid = 'pg_proc'::regclass
JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'wdc'
WHERE d.deptype = 'e' AND p.pronamespace = 'public'::regnamespace
  AND p.prorettype <> 'index_am_handler'::regtype
  AND (p.provolatile <> 'i' OR p.proparallel <> 's')
ORDER BY 1;

-- the type and operators live in the extension schema, schema wdc exists
SELECT typnamespace::regnamespace FROM pg_type WHERE typname = 'latent';
SELECT count(*) FROM pg_namespace WHERE nspname = 'wdc';

-- btree and hash opclasses validate
SELECT opcname, amvalidate(opc.oid)
FROM pg_opclass opc JOIN pg_am am ON am.oid = opc.opcmethod
WHERE opcname IN ('latent_ops', 'latent_hash_ops') ORDER BY 1;
