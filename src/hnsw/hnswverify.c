/*
 * hnswverify.c
 *	  wdc.hnsw_verify(index): structural checks of a wdc_hnsw index.
 *
 * Two passes under AccessShareLock, each page read with a share lock:
 *	 1. metapage, page headers and every tuple's own fields; records each
 *		element's level;
 *	 2. every neighbour list: slots packed, no duplicates, no self links,
 *		every target an element of at least the list's level, every level-0
 *		code equal to the code of the target's vector; the entry point and
 *		its level.
 * Each problem is one result row (block, offset, message); a healthy index
 * returns no rows.  Concurrent inserts can make a list briefly name an
 * element that a concurrent vacuum is removing, so run it on a quiet index
 * for a clean result.
 */
#include "postgres.h"

#include <math.h>

#include "access/relation.h"
#include "catalog/pg_class.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/rel.h"

#include "hnsw/hnsw.h"

#define VERIFY_MAX_PROBLEMS 1000

typedef struct VerifyState
{
	ReturnSetInfo *rsinfo;
	int			nproblems;
} VerifyState;

/* Level per element TID (the simplehash instance keyed by TID, value unused) */
typedef struct ElementInfo
{
	int			level;
	bool		deleted;
	uint8		code[FLEXIBLE_ARRAY_MEMBER];	/* codec.dims bytes */
} ElementInfo;

static void
Report(VerifyState *vs, BlockNumber blkno, OffsetNumber off, const char *fmt,...)
	pg_attribute_printf(4, 5);

static void
Report(VerifyState *vs, BlockNumber blkno, OffsetNumber off, const char *fmt,...)
{
	Datum		values[3];
	bool		nulls[3] = {false, false, false};
	char		buf[256];
	va_list		args;

	if (vs->nproblems++ >= VERIFY_MAX_PROBLEMS)
		return;
	va_start(args, fmt);
	vsnprintf(buf, sizeof(buf), fmt, args);
	va_end(args);
	values[0] = Int64GetDatum((int64) blkno);
	if (blkno == InvalidBlockNumber)
		nulls[0] = true;
	values[1] = Int32GetDatum((int32) off);
	if (off == InvalidOffsetNumber)
		nulls[1] = true;
	values[2] = CStringGetTextDatum(buf);
	tuplestore_putvalues(vs->rsinfo->setResult, vs->rsinfo->setDesc, values, nulls);
}

static ElementInfo *
LookupElement(hnsw_visited_hash *elements, ItemPointerData tid)
{
	HnswVisitedEntry *entry = hnsw_visited_lookup(elements, tid);

	return entry ? (ElementInfo *) entry->candidate : NULL;
}

/*
 * Check one level's list of the element at (blkno, off).  slots is the
 * element's slot array and level its level.
 */
static void
CheckList(VerifyState *vs, hnsw_visited_hash *elements, BlockNumber blkno,
		  OffsetNumber off, const HnswMetaPageData *meta, int level, int lc,
		  ItemPointer slots)
{
	int			m = meta->m;
	int			codeDims = HnswLevelCodeDims(&meta->codec, lc);
	int			capacity = HnswLevelCapacity(m, lc);
	const ItemPointerData *list = slots + HnswLevelStart(m, lc);
	ItemPointerData self;
	bool		ended = false;

	ItemPointerSet(&self, blkno, off);
	for (int i = 0; i < capacity; i++)
	{
		ItemPointerData t = list[i];
		ElementInfo *target;

		if (!ItemPointerIsValid(&t))
		{
			ended = true;
			continue;
		}
		if (ended)
			Report(vs, blkno, off, "level %d list has a used slot %d after an empty one", lc, i);
		if (ItemPointerEquals(&t, &self))
			Report(vs, blkno, off, "level %d list links the element to itself", lc);
		for (int j = 0; j < i; j++)
			if (ItemPointerEquals((ItemPointer) &list[j], &t))
				Report(vs, blkno, off, "level %d list names (%u,%u) twice", lc,
					   ItemPointerGetBlockNumber(&t), ItemPointerGetOffsetNumber(&t));
		target = LookupElement(elements, t);
		if (target == NULL)
			Report(vs, blkno, off, "level %d list names (%u,%u), which is not an element",
				   lc, ItemPointerGetBlockNumber(&t), ItemPointerGetOffsetNumber(&t));
		else if (target->level < lc)
			Report(vs, blkno, off, "level %d list names (%u,%u), whose level is %d",
				   lc, ItemPointerGetBlockNumber(&t), ItemPointerGetOffsetNumber(&t),
				   target->level);
		else if (codeDims > 0 &&
				 memcmp(HnswSlotCode(slots, m, level, &meta->codec, HnswLevelStart(m, lc) + i),
						target->code, codeDims) != 0)
			Report(vs, blkno, off, "level %d slot %d has a code that differs from the code of (%u,%u)",
				   lc, i, ItemPointerGetBlockNumber(&t), ItemPointerGetOffsetNumber(&t));
	}
}

PG_FUNCTION_INFO_V1(hnsw_verify);

/* wdc.hnsw_verify(regclass): one row per structural problem */
Datum
hnsw_verify(PG_FUNCTION_ARGS)
{
	Oid			indexoid = PG_GETARG_OID(0);
	VerifyState vs;
	Relation	index;
	Buffer		buf;
	HnswMetaPageData meta;
	BlockNumber nblocks;
	hnsw_visited_hash *elements;
	MemoryContext cxt;
	MemoryContext oldcxt;
	int			maxLiveLevel = -1;
	int			nlive = 0;

	InitMaterializedSRF(fcinfo, 0);
	vs.rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	vs.nproblems = 0;

	index = try_relation_open(indexoid, AccessShareLock);
	if (index == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("index with OID %u does not exist", indexoid)));
	if (index->rd_rel->relkind == RELKIND_PARTITIONED_INDEX)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("\"%s\" is a partitioned index, which has no pages of its own",
						RelationGetRelationName(index)),
				 errhint("Verify the index of each partition, for example those listed by pg_partition_tree('%s').",
						 RelationGetRelationName(index))));
	if (index->rd_rel->relkind != RELKIND_INDEX || index->rd_indam == NULL ||
		index->rd_indam->amgettuple != hnswgettuple)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("\"%s\" is not a wdc_hnsw index", RelationGetRelationName(index))));

	cxt = AllocSetContextCreate(CurrentMemoryContext, "hnsw verify", ALLOCSET_DEFAULT_SIZES);
	oldcxt = MemoryContextSwitchTo(cxt);
	elements = hnsw_visited_create(cxt, 1024, NULL);

	/* 1. Metapage */
	buf = ReadBuffer(index, HNSW_METAPAGE_BLKNO);
	LockBuffer(buf, BUFFER_LOCK_SHARE);
	memcpy(&meta, HnswPageGetMeta(BufferGetPage(buf)), sizeof(meta));
	UnlockReleaseBuffer(buf);
	if (meta.magic != HNSW_MAGIC || meta.version != HNSW_FORMAT_VERSION)
	{
		Report(&vs, HNSW_METAPAGE_BLKNO, InvalidOffsetNumber,
			   "metapage has magic %08x version %u", meta.magic, meta.version);
		goto done;
	}
	if (meta.m != HnswGetM(index))
		Report(&vs, HNSW_METAPAGE_BLKNO, InvalidOffsetNumber,
			   "metapage has m %u, the index option is %d", meta.m, HnswGetM(index));
	if (meta.codec.dims != 0)
	{
		HnswCodec	expected;

		HnswCodecSetLayout(&expected, meta.dims, meta.m);
		if (meta.codec.dims != expected.dims || meta.codec.maxLevel != expected.maxLevel)
		{
			Report(&vs, HNSW_METAPAGE_BLKNO, InvalidOffsetNumber,
				   "metapage has codes of %u dimensions up to level %u, expected %u up to level %u",
				   meta.codec.dims, meta.codec.maxLevel, expected.dims, expected.maxLevel);
			goto done;
		}
	}
	for (int i = 0; i < meta.codec.dims; i++)
		if (!isfinite(meta.codec.low[i]) || !(meta.codec.step[i] > 0.0f) ||
			!isfinite(meta.codec.step[i]))
			Report(&vs, HNSW_METAPAGE_BLKNO, InvalidOffsetNumber,
				   "metapage has code range %g + %g * c in dimension %d",
				   meta.codec.low[i], meta.codec.step[i], i);
	nblocks = RelationGetNumberOfBlocks(index);

	/* 1. Tuples */
	for (BlockNumber blkno = HNSW_METAPAGE_BLKNO + 1; blkno < nblocks; blkno++)
	{
		Page		page;

		CHECK_FOR_INTERRUPTS();
		buf = ReadBuffer(index, blkno);
		LockBuffer(buf, BUFFER_LOCK_SHARE);
		page = BufferGetPage(buf);
		if (PageIsNew(page))
		{
			UnlockReleaseBuffer(buf);
			continue;
		}
		if (HnswPageGetOpaque(page)->page_id != HNSW_PAGE_ID)
			Report(&vs, blkno, InvalidOffsetNumber, "page has id %04x",
				   HnswPageGetOpaque(page)->page_id);
		for (OffsetNumber off = FirstOffsetNumber; off <= PageGetMaxOffsetNumber(page); off++)
		{
			ItemId		itemid = PageGetItemId(page, off);
			HnswElementTuple etup;
			ItemPointerData tid;
			bool		isinline;
			ElementInfo *info;
			bool		found;
			HnswVisitedEntry *entry;

			if (!ItemIdIsNormal(itemid))
				continue;
			etup = (HnswElementTuple) PageGetItem(page, itemid);
			if (etup->type == HNSW_NEIGHBOR_TUPLE)
				continue;
			if (etup->type != HNSW_ELEMENT_TUPLE)
			{
				Report(&vs, blkno, off, "tuple has unknown type %u", etup->type);
				continue;
			}
			if (etup->level > HNSW_MAX_LEVEL)
			{
				Report(&vs, blkno, off, "element has level %u", etup->level);
				continue;
			}
			isinline = !ItemPointerIsValid(&etup->neighbortid);
			if (ItemIdGetLength(itemid) != HnswElementTupleSize(meta.dims, meta.m, etup->level,
																isinline, &meta.codec))
			{
				Report(&vs, blkno, off, "element has size %u, expected %zu",
					   ItemIdGetLength(itemid),
					   HnswElementTupleSize(meta.dims, meta.m, etup->level, isinline,
											&meta.codec));
				continue;
			}
			if (etup->nheaptids > HNSW_HEAPTIDS)
				Report(&vs, blkno, off, "element has %u heap TIDs", etup->nheaptids);
			if ((etup->flags & HNSW_ELEMENT_DELETED) && etup->nheaptids > 0)
				Report(&vs, blkno, off, "deleted element still has %u heap TIDs", etup->nheaptids);
			if (!(etup->flags & HNSW_ELEMENT_DELETED) && etup->nheaptids == 0)
				Report(&vs, blkno, off, "live element has no heap TID");
			if (!(etup->flags & HNSW_ELEMENT_DELETED))
			{
				nlive++;
				maxLiveLevel = Max(maxLiveLevel, etup->level);
			}

			ItemPointerSet(&tid, blkno, off);
			info = palloc(offsetof(ElementInfo, code) + meta.codec.dims);
			HnswCodecEncode(&meta.codec, etup->x, info->code);
			info->level = etup->level;
			info->deleted = (etup->flags & HNSW_ELEMENT_DELETED) != 0;
			entry = hnsw_visited_insert(elements, tid, &found);
			entry->candidate = (HnswCandidate *) info;
		}
		UnlockReleaseBuffer(buf);
	}

	/* 2. Lists */
	for (BlockNumber blkno = HNSW_METAPAGE_BLKNO + 1; blkno < nblocks; blkno++)
	{
		Page		page;

		CHECK_FOR_INTERRUPTS();
		buf = ReadBuffer(index, blkno);
		LockBuffer(buf, BUFFER_LOCK_SHARE);
		page = BufferGetPage(buf);
		for (OffsetNumber off = FirstOffsetNumber;
			 !PageIsNew(page) && off <= PageGetMaxOffsetNumber(page); off++)
		{
			HnswElementTuple etup = HnswGetElement(page, off);
			ItemPointerData tid;
			ElementInfo *info;

			ItemPointerSet(&tid, blkno, off);
			if (etup == NULL || (info = LookupElement(elements, tid)) == NULL)
				continue;
			if (ItemPointerIsValid(&etup->neighbortid))
			{
				ItemPointerData ntid = etup->neighbortid;
				int			level = etup->level;
				Buffer		nbuf;
				HnswNeighborTuple ntup;

				/* Copy what is needed before reading another page */
				UnlockReleaseBuffer(buf);
				nbuf = ReadBuffer(index, ItemPointerGetBlockNumber(&ntid));
				LockBuffer(nbuf, BUFFER_LOCK_SHARE);
				ntup = HnswGetNeighborTuple(BufferGetPage(nbuf), ItemPointerGetOffsetNumber(&ntid));
				if (ntup == NULL)
					Report(&vs, blkno, off, "neighbour tuple (%u,%u) is missing",
						   ItemPointerGetBlockNumber(&ntid), ItemPointerGetOffsetNumber(&ntid));
				else if (!ItemPointerEquals(&ntup->elementtid, &tid) || ntup->level != level)
					Report(&vs, blkno, off, "neighbour tuple (%u,%u) belongs to another element",
						   ItemPointerGetBlockNumber(&ntid), ItemPointerGetOffsetNumber(&ntid));
				else
					for (int lc = 0; lc <= level; lc++)
						CheckList(&vs, elements, blkno, off, &meta, level, lc, ntup->slots);
				UnlockReleaseBuffer(nbuf);
				buf = ReadBuffer(index, blkno);
				LockBuffer(buf, BUFFER_LOCK_SHARE);
				page = BufferGetPage(buf);
				continue;
			}
			for (int lc = 0; lc <= etup->level; lc++)
				CheckList(&vs, elements, blkno, off, &meta, etup->level, lc,
						  HnswTupleSlots(etup, meta.dims));
		}
		UnlockReleaseBuffer(buf);
	}

	/* 2. Entry point */
	if (ItemPointerIsValid(&meta.entryTid))
	{
		ElementInfo *entry = LookupElement(elements, meta.entryTid);

		if (entry == NULL)
			Report(&vs, HNSW_METAPAGE_BLKNO, InvalidOffsetNumber,
				   "entry point (%u,%u) is not an element",
				   ItemPointerGetBlockNumber(&meta.entryTid),
				   ItemPointerGetOffsetNumber(&meta.entryTid));
		else if (entry->level != meta.entryLevel)
			Report(&vs, HNSW_METAPAGE_BLKNO, InvalidOffsetNumber,
				   "entry point has level %d, the metapage says %d", entry->level, meta.entryLevel);
		if (maxLiveLevel > meta.entryLevel)
			Report(&vs, HNSW_METAPAGE_BLKNO, InvalidOffsetNumber,
				   "an element has level %d, above the entry point's %d",
				   maxLiveLevel, meta.entryLevel);
	}
	else if (nlive > 0)
		Report(&vs, HNSW_METAPAGE_BLKNO, InvalidOffsetNumber,
			   "index has %d live elements but no entry point", nlive);

done:
	if (vs.nproblems > VERIFY_MAX_PROBLEMS)
	{
		int			hidden = vs.nproblems - VERIFY_MAX_PROBLEMS;

		vs.nproblems = 0;
		Report(&vs, InvalidBlockNumber, InvalidOffsetNumber, "%d more problems not shown", hidden);
	}
	MemoryContextSwitchTo(oldcxt);
	MemoryContextDelete(cxt);
	relation_close(index, AccessShareLock);
	return (Datum) 0;
}
