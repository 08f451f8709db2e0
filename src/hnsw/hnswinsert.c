/*
 * hnswinsert.c
 *	  Insert one vector into an on-disk wdc_hnsw graph (HNSW paper,
 *	  algorithm 1), safely alongside other inserts, scans and vacuum.
 *
 * Steps:
 *	 1. Read the metapage; an empty index takes the first-insert path,
 *		serialised by a heavyweight lock on the metapage.
 *	 2. Descend greedily to the new element's level, then search each level
 *		below with ef_construction and choose neighbours (algorithm 4).
 *	 3. A vector identical to an element the search met joins that element
 *		as another heap TID when there is room.
 *	 4. Write the element tuple, lists filled, on a page with room.
 *	 5. Add the reverse edges one neighbour at a time; of the neighbours
 *		holding the same vector, only one links back (HnswAttachCopy).
 *	 6. Raise the entry point if the new element is the highest.
 *
 * Locking: page changes take one exclusive buffer lock at a time and never
 * wait for another buffer while holding it; the searches hold only share
 * locks (see LoadElements).  The first insert of an empty index is
 * serialised by a heavyweight lock on the metapage instead.  A reverse edge is
 * computed from a snapshot of the neighbour's list taken under a share
 * lock and written under an exclusive lock only if the list is still the
 * same; otherwise the new edge goes into a free slot or is dropped.  So a
 * concurrent change is never overwritten (no lost edges) and an edge is
 * never added twice.  Every page change is WAL-logged with GenericXLog.
 */
#include "postgres.h"

#include "access/generic_xlog.h"
#include "storage/freespace.h"
#include "storage/lmgr.h"
#include "utils/memutils.h"
#include "utils/rel.h"

#include "hnsw/hnsw.h"

/* A chosen neighbour of the new element at one level */
typedef struct HnswNewEdge
{
	ItemPointerData tid;
	double		distance;
	bool		copy;			/* holds the same vector as the new element */
	uint8		code[HNSW_CODE_MAX_DIMS];	/* on levels with codes only */
} HnswNewEdge;

/*
 * Check a latent for indexing and write its indexed form to out (room for
 * HNSW_MAX_DIM floats).  Returns false when the index leaves the value out
 * (zero vector under cosine).
 */
bool
HnswPrepareValue(Relation index, HnswMetric metric, Datum value,
				 float *out, int *dims, uint32 *fingerprint)
{
	Latent	   *v = DatumGetLatentP(value);

	LatentCheckVersion(v);
	if (v->dim > HNSW_MAX_DIM)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("latent of %d dimensions is too large for index \"%s\"",
						v->dim, RelationGetRelationName(index)),
				 errdetail("wdc_hnsw indexes at most %d dimensions.", HNSW_MAX_DIM)));
	*dims = v->dim;
	*fingerprint = v->fingerprint;
	return HnswPrepareVector(metric, v->x, v->dim, out);
}

/*
 * Return a buffer, exclusively locked, on a page with at least need bytes
 * free (line pointers included).  *isnew says the page was just added and
 * must be initialised; then *hint is set to it for the metapage.
 */
static Buffer
GetPageWithRoom(Relation index, Size need, BlockNumber hint, bool *isnew)
{
	Buffer		buf;
	BlockNumber blkno;

	*isnew = false;

	/* The last page, where inserts usually go */
	if (hint != InvalidBlockNumber)
	{
		buf = ReadBuffer(index, hint);
		LockBuffer(buf, BUFFER_LOCK_EXCLUSIVE);
		if (PageGetExactFreeSpace(BufferGetPage(buf)) >= need)
			return buf;
		UnlockReleaseBuffer(buf);
	}

	/* Space freed by vacuum */
	blkno = GetPageWithFreeSpace(index, need);
	while (blkno != InvalidBlockNumber)
	{
		Size		freespace;

		buf = ReadBuffer(index, blkno);
		LockBuffer(buf, BUFFER_LOCK_EXCLUSIVE);
		freespace = PageGetExactFreeSpace(BufferGetPage(buf));
		if (!PageIsNew(BufferGetPage(buf)) && freespace >= need)
			return buf;
		UnlockReleaseBuffer(buf);
		blkno = RecordAndGetPageWithFreeSpace(index, blkno, freespace, need);
	}

	/* A new page */
	LockRelationForExtension(index, ExclusiveLock);
	buf = ReadBuffer(index, P_NEW);
	LockBuffer(buf, BUFFER_LOCK_EXCLUSIVE);
	UnlockRelationForExtension(index, ExclusiveLock);
	*isnew = true;
	return buf;
}

/* Register buf for GenericXLog, initialising it when it is a new page */
static Page
RegisterPage(GenericXLogState *state, Buffer buf, bool isnew)
{
	Page		page;

	page = GenericXLogRegisterBuffer(state, buf, isnew ? GENERIC_XLOG_FULL_IMAGE : 0);
	if (isnew)
		HnswInitPage(page);
	return page;
}

/* Point the metapage's insert hint at a page just added */
static void
UpdateInsertPage(Relation index, BlockNumber blkno)
{
	Buffer		buf = ReadBuffer(index, HNSW_METAPAGE_BLKNO);
	GenericXLogState *state;
	HnswMetaPage meta;

	LockBuffer(buf, BUFFER_LOCK_EXCLUSIVE);
	state = GenericXLogStart(index);
	meta = HnswPageGetMeta(RegisterPage(state, buf, false));
	if (meta->insertPage == InvalidBlockNumber || meta->insertPage < blkno)
	{
		meta->insertPage = blkno;
		GenericXLogFinish(state);
	}
	else
		GenericXLogAbort(state);
	UnlockReleaseBuffer(buf);
}

/*
 * Write a new element tuple (and its neighbour tuple when the lists do not
 * fit inline) and return its TID.  etup's inline slots or ntup's slots are
 * already filled.
 */
static ItemPointerData
WriteElement(Relation index, HnswElementTuple etup, Size esize,
			 HnswNeighborTuple ntup, Size nsize, BlockNumber hint)
{
	ItemPointerData etid;
	GenericXLogState *state;
	Buffer		buf;
	Page		page;
	bool		isnew;
	BlockNumber newpage = InvalidBlockNumber;
	OffsetNumber eoff;

	if (ntup == NULL || esize + nsize + 2 * sizeof(ItemIdData) <= HNSW_MAX_ITEM_SIZE + sizeof(ItemIdData))
	{
		/* Both tuples on one page, in one WAL record */
		Size		need = esize + sizeof(ItemIdData) +
			(ntup ? nsize + sizeof(ItemIdData) : 0);

		buf = GetPageWithRoom(index, need, hint, &isnew);
		if (isnew)
			newpage = BufferGetBlockNumber(buf);
		state = GenericXLogStart(index);
		page = RegisterPage(state, buf, isnew);
		eoff = PageAddItem(page, (Item) etup, esize, InvalidOffsetNumber, false, false);
		if (eoff == InvalidOffsetNumber)
			elog(ERROR, "failed to add element to index \"%s\"", RelationGetRelationName(index));
		ItemPointerSet(&etid, BufferGetBlockNumber(buf), eoff);
		if (ntup != NULL)
		{
			OffsetNumber noff;
			HnswElementTuple placed;

			ntup->elementtid = etid;
			noff = PageAddItem(page, (Item) ntup, nsize, InvalidOffsetNumber, false, false);
			if (noff == InvalidOffsetNumber)
				elog(ERROR, "failed to add neighbour tuple to index \"%s\"",
					 RelationGetRelationName(index));
			placed = HnswGetElement(page, eoff);
			ItemPointerSet(&placed->neighbortid, BufferGetBlockNumber(buf), noff);
		}
		GenericXLogFinish(state);
		UnlockReleaseBuffer(buf);
	}
	else
	{
		/*
		 * Two pages: the neighbour tuple first, so the element never points
		 * at a missing one.  A crash between the records leaves an orphan
		 * neighbour tuple that nothing references.
		 */
		ItemPointerData ntid;
		OffsetNumber noff;

		buf = GetPageWithRoom(index, nsize + sizeof(ItemIdData), hint, &isnew);
		if (isnew)
			newpage = BufferGetBlockNumber(buf);
		state = GenericXLogStart(index);
		page = RegisterPage(state, buf, isnew);
		noff = PageAddItem(page, (Item) ntup, nsize, InvalidOffsetNumber, false, false);
		if (noff == InvalidOffsetNumber)
			elog(ERROR, "failed to add neighbour tuple to index \"%s\"",
				 RelationGetRelationName(index));
		ItemPointerSet(&ntid, BufferGetBlockNumber(buf), noff);
		GenericXLogFinish(state);
		UnlockReleaseBuffer(buf);

		etup->neighbortid = ntid;
		buf = GetPageWithRoom(index, esize + sizeof(ItemIdData),
							  newpage != InvalidBlockNumber ? newpage : hint, &isnew);
		if (isnew)
			newpage = BufferGetBlockNumber(buf);
		state = GenericXLogStart(index);
		page = RegisterPage(state, buf, isnew);
		eoff = PageAddItem(page, (Item) etup, esize, InvalidOffsetNumber, false, false);
		if (eoff == InvalidOffsetNumber)
			elog(ERROR, "failed to add element to index \"%s\"", RelationGetRelationName(index));
		ItemPointerSet(&etid, BufferGetBlockNumber(buf), eoff);
		GenericXLogFinish(state);
		UnlockReleaseBuffer(buf);

		/* Back link, used only by verification */
		buf = ReadBuffer(index, ItemPointerGetBlockNumber(&ntid));
		LockBuffer(buf, BUFFER_LOCK_EXCLUSIVE);
		state = GenericXLogStart(index);
		page = RegisterPage(state, buf, false);
		ntup = HnswGetNeighborTuple(page, ItemPointerGetOffsetNumber(&ntid));
		if (ntup != NULL)
		{
			ntup->elementtid = etid;
			GenericXLogFinish(state);
		}
		else
			GenericXLogAbort(state);
		UnlockReleaseBuffer(buf);
	}

	if (newpage != InvalidBlockNumber)
		UpdateInsertPage(index, newpage);
	return etid;
}

/*
 * Add heaptid to the element at tid if it still holds exactly vec and has
 * room; returns whether it did.
 */
static bool
AddHeapTid(Relation index, ItemPointer tid, const float *vec, int dims,
		   uint32 fingerprint, ItemPointer heaptid)
{
	Buffer		buf = ReadBuffer(index, ItemPointerGetBlockNumber(tid));
	GenericXLogState *state;
	HnswElementTuple etup;
	bool		added = false;

	LockBuffer(buf, BUFFER_LOCK_EXCLUSIVE);
	state = GenericXLogStart(index);
	etup = HnswGetElement(RegisterPage(state, buf, false), ItemPointerGetOffsetNumber(tid));
	if (etup != NULL && !(etup->flags & HNSW_ELEMENT_DELETED) &&
		etup->nheaptids < HNSW_HEAPTIDS && etup->fingerprint == fingerprint &&
		memcmp(etup->x, vec, sizeof(float) * dims) == 0)
	{
		etup->heaptids[etup->nheaptids++] = *heaptid;
		added = true;
		GenericXLogFinish(state);
	}
	else
		GenericXLogAbort(state);
	UnlockReleaseBuffer(buf);
	return added;
}

/* Whether c contains vec (of the given fingerprint) and has room for a heap TID */
static inline bool
CopyWithRoom(const HnswCandidate *c, const float *vec, int dims, uint32 fingerprint,
			 double selfDistance)
{
	return c->distance == selfDistance && !c->deleted && c->nheaptids < HNSW_HEAPTIDS &&
		c->fingerprint == fingerprint &&
		memcmp(c->vector, vec, sizeof(float) * dims) == 0;
}

/*
 * Add heaptid to a copy of vec with room among the elements a finished
 * search met: its result found[0 .. nfound), then the ties its result had
 * no room for.  Returns whether it did.  The search must keep vectors.
 */
static bool
JoinCopy(Relation index, HnswSearch *search, HnswCandidate **found, int nfound,
		 const float *vec, int dims, uint32 fingerprint, ItemPointer heaptid,
		 double selfDistance)
{
	HnswCandidate *c;

	for (int i = 0; i < nfound; i++)
	{
		if (CopyWithRoom(found[i], vec, dims, fingerprint, selfDistance) &&
			AddHeapTid(index, &found[i]->tid, vec, dims, fingerprint, heaptid))
			return true;
	}
	while ((c = HnswSearchPopPending(search, selfDistance)) != NULL)
	{
		if (CopyWithRoom(c, vec, dims, fingerprint, selfDistance) &&
			AddHeapTid(index, &c->tid, vec, dims, fingerprint, heaptid))
			return true;
	}
	return false;
}

/* Whether list[0 .. n) contains tid */
static bool
ListContains(const ItemPointerData *list, int n, ItemPointer tid)
{
	for (int i = 0; i < n; i++)
		if (ItemPointerEquals((ItemPointer) &list[i], tid))
			return true;
	return false;
}

/*
 * Write newlist into the level-lc list of the element at etid if the list
 * still equals snapshot; otherwise put newtid (unless NULL) in a free slot
 * if there is one and it is not there yet.  On a level with codes,
 * newcodes contains the codes of newlist (codec->dims bytes each) and
 * newtidcode that of newtid.  Returns whether the list now contains
 * newtid (newlist was written, or newtid was there or added).
 */
bool
HnswWriteNeighborList(Relation index, ItemPointer etid, ItemPointer neighbortid,
					  int dims, int m, int lc, const HnswCodec *codec,
					  const ItemPointerData *snapshot, int nsnapshot,
					  const ItemPointerData *newlist, const uint8 *newcodes, int nnew,
					  ItemPointer newtid, const uint8 *newtidcode)
{
	bool		isinline = !ItemPointerIsValid(neighbortid);
	ItemPointer target = isinline ? etid : neighbortid;
	Buffer		buf = ReadBuffer(index, ItemPointerGetBlockNumber(target));
	GenericXLogState *state;
	Page		page;
	ItemPointer slots = NULL;
	uint8	   *codes = NULL;
	int			codeDims = HnswLevelCodeDims(codec, lc);
	int			capacity = HnswLevelCapacity(m, lc);
	int			start = HnswLevelStart(m, lc);
	bool		same = true;
	bool		changed = false;
	bool		contains = false;

	LockBuffer(buf, BUFFER_LOCK_EXCLUSIVE);
	state = GenericXLogStart(index);
	page = RegisterPage(state, buf, false);

	/* Find the list again; the element may be gone or replaced */
	if (isinline)
	{
		HnswElementTuple etup = HnswGetElement(page, ItemPointerGetOffsetNumber(etid));

		if (etup != NULL && etup->level >= lc && !ItemPointerIsValid(&etup->neighbortid))
		{
			slots = HnswTupleSlots(etup, dims);
			if (codeDims > 0)
				codes = HnswSlotCode(slots, m, etup->level, codec, start);
		}
	}
	else
	{
		HnswNeighborTuple ntup = HnswGetNeighborTuple(page, ItemPointerGetOffsetNumber(neighbortid));

		if (ntup != NULL && ntup->level >= lc && ItemPointerEquals(&ntup->elementtid, etid))
		{
			slots = ntup->slots;
			if (codeDims > 0)
				codes = HnswSlotCode(slots, m, ntup->level, codec, start);
		}
	}

	if (slots != NULL)
	{
		ItemPointer list = slots + start;

		for (int i = 0; i < capacity && same; i++)
		{
			if (i < nsnapshot)
				same = ItemPointerEquals(&list[i], (ItemPointer) &snapshot[i]);
			else
				same = !ItemPointerIsValid(&list[i]);
		}

		if (same)
		{
			for (int i = 0; i < capacity; i++)
			{
				if (i < nnew)
					list[i] = newlist[i];
				else
					ItemPointerSetInvalid(&list[i]);
			}
			if (codeDims > 0)
				memcpy(codes, newcodes, (Size) nnew * codeDims);
			changed = true;
			contains = newtid == NULL || ListContains(newlist, nnew, newtid);
		}
		else
		{
			int			used = 0;

			while (used < capacity && ItemPointerIsValid(&list[used]))
				used++;
			if (newtid != NULL && ListContains(list, used, newtid))
				contains = true;
			else if (newtid != NULL && used < capacity)
			{
				list[used] = *newtid;
				if (codeDims > 0)
					memcpy(codes + (Size) used * codeDims, newtidcode, codeDims);
				changed = true;
				contains = true;
			}
		}
	}

	if (changed)
		GenericXLogFinish(state);
	else
		GenericXLogAbort(state);
	UnlockReleaseBuffer(buf);
	return contains;
}

/*
 * Write to slots[] the slot numbers of the copies of vec in c's list at the
 * search's level, in list order, and return how many there are.  c must
 * have been loaded by search with keepVectors.  *deletedSlot receives the
 * first slot of a deleted copy, or -1.
 */
static int
FindCopySlots(HnswSearch *search, HnswCandidate *c, const float *vec, int *slots,
			  int *deletedSlot)
{
	ItemPointerData *tids = palloc(sizeof(ItemPointerData) * Max(c->nneighbors, 1));
	HnswCandidate **members = palloc(sizeof(HnswCandidate *) * Max(c->nneighbors, 1));
	int			nmembers;
	int			ncopies = 0;

	*deletedSlot = -1;
	memcpy(tids, c->neighbors, sizeof(ItemPointerData) * c->nneighbors);
	nmembers = HnswLoadCandidates(search, tids, c->nneighbors, members);
	for (int k = 0; k < c->nneighbors; k++)
	{
		for (int i = 0; i < nmembers; i++)
		{
			if (!ItemPointerEquals(&members[i]->tid, &c->neighbors[k]) ||
				memcmp(members[i]->vector, vec, sizeof(float) * search->dims) != 0)
				continue;
			slots[ncopies++] = k;
			if (members[i]->deleted && *deletedSlot < 0)
				*deletedSlot = k;
			break;
		}
	}
	pfree(tids);
	pfree(members);
	return ncopies;
}

/*
 * Add an edge from the element at tid to the new element at newtid
 * (distance between them: distance) at level lc, pruning the list with the
 * neighbour heuristic when it is full.  When dropped is not NULL (room for
 * the level's capacity), the neighbours a pruning removed are written to
 * it.  Returns their number.
 */
int
HnswAddReverseEdge(Relation index, HnswMetric metric, int dims, int m,
				   const HnswCodec *codec, int lc, ItemPointer tid,
				   ItemPointer newtid, const float *newvec,
				   double distance, ItemPointerData *dropped, MemoryContext cxt)
{
	MemoryContext edgecxt = AllocSetContextCreate(cxt, "hnsw edge", ALLOCSET_SMALL_SIZES);
	MemoryContext oldcxt = MemoryContextSwitchTo(edgecxt);
	int			capacity = HnswLevelCapacity(m, lc);
	HnswSearch search;
	HnswCandidate *self;
	ItemPointerData selftid = *tid;
	ItemPointerData *snapshot;
	int			nsnapshot;
	int			codeDims = HnswLevelCodeDims(codec, lc);
	uint8		newcode[HNSW_CODE_MAX_DIMS];
	int			ndropped = 0;

	if (codeDims > 0)
		HnswCodecEncode(codec, newvec, newcode);

	/* Snapshot the neighbour's vector and list (and codes) under a share lock */
	HnswSearchInit(&search, index, metric, dims, m, codec, newvec, lc, capacity, edgecxt);
	search.keepVectors = true;
	if (HnswLoadCandidates(&search, &selftid, 1, &self) == 0 || self->level < lc)
		goto done;
	HnswLoadNeighbors(&search, self);
	snapshot = self->neighbors;
	nsnapshot = self->nneighbors;
	if (ItemPointerEquals(tid, newtid) || ListContains(snapshot, nsnapshot, newtid))
		goto done;

	/*
	 * A copy of the element joins a list that has room only below the copy
	 * limit.  Beyond it, the next pruning would drop one of the copies.
	 */
	if (nsnapshot < capacity && memcmp(self->vector, newvec, sizeof(float) * dims) == 0)
	{
		int		   *copies = palloc(sizeof(int) * capacity);
		int			deletedSlot;

		if (FindCopySlots(&search, self, newvec, copies, &deletedSlot) >= HnswMaxCopies(capacity))
			goto done;
	}

	if (nsnapshot < capacity)
	{
		ItemPointerData *newlist = palloc(sizeof(ItemPointerData) * (nsnapshot + 1));
		uint8	   *newcodes = palloc((Size) (nsnapshot + 1) * Max(codeDims, 1));

		memcpy(newlist, snapshot, sizeof(ItemPointerData) * nsnapshot);
		newlist[nsnapshot] = *newtid;
		if (codeDims > 0)
		{
			if (nsnapshot > 0)
				memcpy(newcodes, self->codes, (Size) nsnapshot * codeDims);
			memcpy(newcodes + (Size) nsnapshot * codeDims, newcode, codeDims);
		}
		HnswWriteNeighborList(index, tid, &self->neighbortid, dims, m, lc, codec,
							  snapshot, nsnapshot, newlist, newcodes, nsnapshot + 1,
							  newtid, newcode);
	}
	else
	{
		/* Full: keep the best of the old neighbours and the new element */
		HnswSearch around;
		ItemPointerData *tids = palloc(sizeof(ItemPointerData) * nsnapshot);
		HnswCandidate **loaded = palloc(sizeof(HnswCandidate *) * nsnapshot);
		const float **vectors = palloc(sizeof(float *) * (nsnapshot + 1));
		double	   *distances = palloc(sizeof(double) * (nsnapshot + 1));
		ItemPointerData *order = palloc(sizeof(ItemPointerData) * (nsnapshot + 1));
		int		   *selected = palloc(sizeof(int) * capacity);
		ItemPointerData *newlist = palloc(sizeof(ItemPointerData) * capacity);
		uint8	   *newcodes = palloc((Size) capacity * Max(codeDims, 1));
		int			nloaded;
		int			n = 0;
		int			nselected;
		bool		keepsNew = false;

		HnswSearchInit(&around, index, metric, dims, m, codec, self->vector, lc, capacity,
					   edgecxt);
		around.keepVectors = true;
		memcpy(tids, snapshot, sizeof(ItemPointerData) * nsnapshot);
		nloaded = HnswLoadCandidates(&around, tids, nsnapshot, loaded);

		/* Insertion sort by distance to the neighbour, new element included */
		for (int i = 0; i <= nloaded; i++)
		{
			const float *vec = i < nloaded ? loaded[i]->vector : newvec;
			double		d = i < nloaded ? loaded[i]->distance : distance;
			ItemPointerData t = i < nloaded ? loaded[i]->tid : *newtid;
			int			j = n;

			if (i < nloaded && loaded[i]->deleted)
				continue;
			/*
			 * The new element goes after existing neighbours at an equal
			 * distance, as in the in-memory build.  A new copy of a vector
			 * then never displaces an older copy, which might have no
			 * other incoming edge (AttachCopy links new copies instead).
			 */
			while (j > 0 && distances[j - 1] > d)
			{
				vectors[j] = vectors[j - 1];
				distances[j] = distances[j - 1];
				order[j] = order[j - 1];
				j--;
			}
			vectors[j] = vec;
			distances[j] = d;
			order[j] = t;
			n++;
		}

		nselected = HnswSelectNeighbors(metric, dims, vectors, distances, n, capacity, selected);
		for (int i = 0; i < nselected; i++)
		{
			newlist[i] = order[selected[i]];
			if (ItemPointerEquals(&newlist[i], newtid))
				keepsNew = true;
			if (codeDims > 0)
				HnswCodecEncode(codec, vectors[selected[i]], newcodes + (Size) i * codeDims);
		}
		if (keepsNew &&
			HnswWriteNeighborList(index, tid, &self->neighbortid, dims, m, lc, codec,
								  snapshot, nsnapshot, newlist, newcodes, nselected,
								  newtid, newcode))
		{
			/* Possibly dropped: newtid may have gone into a free slot instead */
			for (int i = 0; i < nsnapshot && dropped != NULL; i++)
				if (!ListContains(newlist, nselected, &snapshot[i]))
					dropped[ndropped++] = snapshot[i];
		}
	}

done:
	MemoryContextSwitchTo(oldcxt);
	MemoryContextDelete(edgecxt);
	return ndropped;
}

/*
 * Add an edge from the element at newtid to q, a copy of it about to lose
 * an incoming edge.  The edge takes a free slot while the list contains
 * fewer copies than HnswMaxCopies, else the slot of a deleted copy, else that of
 * the last copy that reached contains (see HnswAttachCopy).  Returns
 * whether the list now has the edge to q.
 */
static bool
AdoptCopy(Relation index, HnswSearch *search, ItemPointer newtid, ItemPointer q,
		  const uint8 *code, hnsw_visited_hash *reached)
{
	int			capacity = HnswLevelCapacity(search->m, 0);
	int			codeDims = search->codec != NULL ? search->codec->dims : 0;
	ItemPointerData selftid = *newtid;
	HnswCandidate *self;
	ItemPointerData *newlist;
	uint8	   *newcodes;
	int		   *copies;
	int			ncopies;
	int			deletedSlot;
	int			n;
	int			slot;

	if (HnswLoadCandidates(search, &selftid, 1, &self) == 0)
		return false;
	HnswLoadNeighbors(search, self);
	if (ListContains(self->neighbors, self->nneighbors, q))
		return true;

	/* Beyond the copy limit, a later pruning of the list would drop a copy again */
	n = self->nneighbors;
	copies = palloc(sizeof(int) * capacity);
	ncopies = FindCopySlots(search, self, self->vector, copies, &deletedSlot);
	slot = -1;
	if (n < capacity && ncopies < HnswMaxCopies(capacity))
		slot = n++;
	else if (deletedSlot >= 0)
		slot = deletedSlot;
	else
	{
		for (int i = ncopies - 1; i >= 0 && slot < 0; i--)
			if (hnsw_visited_lookup(reached, self->neighbors[copies[i]]) != NULL)
				slot = copies[i];
	}
	if (slot < 0)
		return false;

	newlist = palloc(sizeof(ItemPointerData) * capacity);
	newcodes = palloc((Size) capacity * Max(codeDims, 1));
	memcpy(newlist, self->neighbors, sizeof(ItemPointerData) * self->nneighbors);
	if (codeDims > 0 && self->nneighbors > 0)
		memcpy(newcodes, self->codes, (Size) self->nneighbors * codeDims);
	newlist[slot] = *q;
	if (codeDims > 0)
		memcpy(newcodes + (Size) slot * codeDims, code, codeDims);
	return HnswWriteNeighborList(index, newtid, &self->neighbortid, search->dims, search->m,
								 0, search->codec, self->neighbors, self->nneighbors,
								 newlist, newcodes, n, q, code);
}

/*
 * Link the element at newtid, a copy of the element at tid (both hold
 * vec), from tid's level-0 list.  Returns whether the link was made.
 * reached is the visited set of a level-0 search that did not pass
 * through newtid (the insert's own search, or a search for an element no
 * list names): the elements in it stay reachable if newtid's edges to
 * them go.  Other edges of newtid may be the only way to a copy, such as
 * one a concurrent insert attached to newtid.
 *
 * A list keeps at most HnswMaxCopies copies of one vector.  When tid's list
 * already contains that many, newtid takes the place of one of them, q.
 * newtid's own list gets the edge to q first (AdoptCopy), so q stays
 * reachable through newtid.  A crash between the two writes leaves an
 * extra edge, never a lost one.  Reverse edges otherwise never displace an older
 * copy (HnswAddReverseEdge).  So every copy keeps an incoming edge from
 * its group however large the group grows: before, the newest copies took
 * the incoming edges of the older ones, and in
 * test/shell/hnsw_duplicates.sh 55 of 88 elements of a group of zero
 * vectors were left with none.
 */
bool
HnswAttachCopy(Relation index, HnswMetric metric, int dims, int m,
			   const HnswCodec *codec, ItemPointer tid, ItemPointer newtid,
			   const float *vec, hnsw_visited_hash *reached, MemoryContext cxt)
{
	MemoryContext edgecxt = AllocSetContextCreate(cxt, "hnsw copy edge", ALLOCSET_SMALL_SIZES);
	MemoryContext oldcxt = MemoryContextSwitchTo(edgecxt);
	int			capacity = HnswLevelCapacity(m, 0);
	int			codeDims = HnswLevelCodeDims(codec, 0);
	uint8		code[HNSW_CODE_MAX_DIMS];
	HnswSearch	search;
	HnswCandidate *parent;
	ItemPointerData selftid = *tid;
	int		   *copies = palloc(sizeof(int) * capacity);
	int			ncopies;
	int			deletedSlot;
	int			slot;
	ItemPointerData displaced;
	ItemPointerData *newlist;
	uint8	   *newcodes;
	bool		displace = false;
	bool		linked = false;

	if (codeDims > 0)
		HnswCodecEncode(codec, vec, code);

	/* The parent's list and its members' vectors, under share locks */
	HnswSearchInit(&search, index, metric, dims, m, codec, vec, 0, capacity, edgecxt);
	search.keepVectors = true;
	if (HnswLoadCandidates(&search, &selftid, 1, &parent) == 0 || parent->deleted)
		goto done;
	HnswLoadNeighbors(&search, parent);
	if (ListContains(parent->neighbors, parent->nneighbors, newtid))
	{
		linked = true;
		goto done;
	}
	ncopies = FindCopySlots(&search, parent, vec, copies, &deletedSlot);

	if (ncopies < HnswMaxCopies(capacity))
	{
		/* The list keeps a copy below the limit, before other vectors */
		MemoryContextSwitchTo(oldcxt);
		MemoryContextDelete(edgecxt);
		HnswAddReverseEdge(index, metric, dims, m, codec, 0, tid, newtid, vec,
						   HnswDistance(metric, vec, vec, dims), NULL, cxt);
		return true;
	}

	/* Give up a deleted copy if there is one: nothing needs to adopt it */
	slot = deletedSlot >= 0 ? deletedSlot : copies[ncopies - 1];
	displaced = parent->neighbors[slot];
	displace = deletedSlot >= 0 ||
		AdoptCopy(index, &search, newtid, &displaced, codeDims > 0 ? code : NULL, reached);
	if (!displace)
		goto done;

	/* The parent's edge to the displaced copy now leads to the new element */
	newlist = palloc(sizeof(ItemPointerData) * parent->nneighbors);
	newcodes = palloc((Size) parent->nneighbors * Max(codeDims, 1));
	memcpy(newlist, parent->neighbors, sizeof(ItemPointerData) * parent->nneighbors);
	newlist[slot] = *newtid;
	if (codeDims > 0)
		memcpy(newcodes, parent->codes, (Size) parent->nneighbors * codeDims);
	linked = HnswWriteNeighborList(index, tid, &parent->neighbortid, dims, m, 0, codec,
								   parent->neighbors, parent->nneighbors, newlist, newcodes,
								   parent->nneighbors, newtid, code);

done:
	MemoryContextSwitchTo(oldcxt);
	MemoryContextDelete(edgecxt);
	return linked;
}

/* Raise the metapage's entry point to the element at tid if it is higher */
static void
UpdateEntryPoint(Relation index, ItemPointer tid, int level, int dims)
{
	Buffer		buf = ReadBuffer(index, HNSW_METAPAGE_BLKNO);
	GenericXLogState *state;
	HnswMetaPage meta;

	LockBuffer(buf, BUFFER_LOCK_EXCLUSIVE);
	state = GenericXLogStart(index);
	meta = HnswPageGetMeta(RegisterPage(state, buf, false));
	if (meta->entryLevel < level || !ItemPointerIsValid(&meta->entryTid))
	{
		meta->entryTid = *tid;
		meta->entryLevel = level;
		if (meta->dims == 0)
			meta->dims = dims;
		GenericXLogFinish(state);
	}
	else
		GenericXLogAbort(state);
	UnlockReleaseBuffer(buf);
}

/* Write a lone element into an empty index and make it the entry point */
static bool
InsertFirst(Relation index, int m, const float *vec, int dims,
			uint32 fingerprint, ItemPointer heaptid)
{
	HnswMetaPageData meta;
	bool		inserted = false;

	/* Serialise first inserts: only one may become the entry point */
	LockPage(index, HNSW_METAPAGE_BLKNO, ExclusiveLock);
	HnswReadMeta(index, &meta);
	if (!ItemPointerIsValid(&meta.entryTid))
	{
		int			level = HnswElementLevel(m, heaptid);
		bool		isinline = HnswNeighborsFitInline(dims, m, level, &meta.codec);
		Size		esize;
		Size		nsize = 0;
		HnswElementTuple etup = HnswFormElement(dims, m, level, isinline, &meta.codec, vec,
												fingerprint, &esize);
		HnswNeighborTuple ntup = isinline ? NULL :
			HnswFormNeighborTuple(m, level, &meta.codec, &nsize);
		ItemPointerData etid;

		etup->heaptids[0] = *heaptid;
		etup->nheaptids = 1;
		etid = WriteElement(index, etup, esize, ntup, nsize, meta.insertPage);
		UpdateEntryPoint(index, &etid, level, dims);
		inserted = true;
	}
	UnlockPage(index, HNSW_METAPAGE_BLKNO, ExclusiveLock);
	return inserted;
}

/*
 * Insert a prepared vector (HnswPrepareValue) for heap row heaptid.
 * Allocates in tmpcxt, which the caller resets.
 */
void
HnswInsertVector(Relation index, const float *vec, int dims, uint32 fingerprint,
				 ItemPointer heaptid, MemoryContext tmpcxt)
{
	MemoryContext oldcxt = MemoryContextSwitchTo(tmpcxt);
	HnswMetric	metric = HnswGetMetric(index);
	int			m = HnswGetM(index);
	int			efConstruction = HnswGetEfConstruction(index);
	HnswMetaPageData meta;
	int			level;
	int			top;
	ItemPointerData entry;
	ItemPointerData *seeds;
	int			nseeds;
	HnswNewEdge **edges;
	int		   *nedges;
	HnswCandidate **found;
	const float *bounds = NULL;
	bool		isinline;
	Size		esize;
	Size		nsize = 0;
	HnswElementTuple etup;
	HnswNeighborTuple ntup;
	ItemPointer slots;
	ItemPointerData etid;
	double		selfDistance = HnswDistance(metric, vec, vec, dims);
	hnsw_visited_hash *reached = NULL;	/* the level-0 search's visited set */

	/* 1. Metapage, and the first-insert path */
	HnswReadMeta(index, &meta);
	if (meta.dims != 0 && meta.dims != (uint32) dims)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_EXCEPTION),
				 errmsg("latent has %d dimensions, index \"%s\" expects %u",
						dims, RelationGetRelationName(index), meta.dims)));
	if (!ItemPointerIsValid(&meta.entryTid))
	{
		if (InsertFirst(index, m, vec, dims, fingerprint, heaptid))
		{
			MemoryContextSwitchTo(oldcxt);
			return;
		}
		HnswReadMeta(index, &meta);
	}

	/* 2. Descend, then search and choose neighbours level by level */
	level = HnswElementLevel(m, heaptid);
	top = Min(level, meta.entryLevel);
	if (meta.codec.dims > 0)
		bounds = HnswBoundTable(&meta.codec, metric, vec, tmpcxt);
	HnswSearchDescend(index, metric, dims, m, &meta.codec, bounds, vec, NULL, &meta, top,
					  HNSW_INSERT_DESCENT_EF, &entry, NULL, tmpcxt);

	edges = palloc0(sizeof(HnswNewEdge *) * (level + 1));
	nedges = palloc0(sizeof(int) * (level + 1));
	found = palloc(sizeof(HnswCandidate *) * efConstruction);
	seeds = palloc(sizeof(ItemPointerData) * efConstruction);
	seeds[0] = entry;
	nseeds = ItemPointerIsValid(&entry) ? 1 : 0;

	for (int lc = top; lc >= 0; lc--)
	{
		HnswSearch search;
		int			capacity = HnswLevelCapacity(m, lc);
		int			nfound;
		const float **vectors = palloc(sizeof(float *) * efConstruction);
		double	   *distances = palloc(sizeof(double) * efConstruction);
		HnswCandidate **live = palloc(sizeof(HnswCandidate *) * efConstruction);
		int		   *selected = palloc(sizeof(int) * capacity);
		int			nlive = 0;
		int			nselected;

		HnswSearchInit(&search, index, metric, dims, m, &meta.codec, vec, lc, efConstruction,
					   tmpcxt);
		if (search.codec != NULL)
			search.bounds = bounds;
		search.keepVectors = true;
		for (int i = 0; i < nseeds; i++)
			HnswSearchAddSeed(&search, &seeds[i]);
		nfound = HnswSearchBatch(&search, INT_MAX, found);
		if (lc == 0)
			reached = search.visited;

		/*
		 * 3. An identical vector joins a copy with room: any of the copies
		 * the search met, which are all at the distance of vec to itself.
		 */
		if (lc == 0 && JoinCopy(index, &search, found, nfound, vec, dims, fingerprint,
								heaptid, selfDistance))
		{
			MemoryContextSwitchTo(oldcxt);
			return;
		}

		for (int i = 0; i < nfound; i++)
		{
			seeds[i] = found[i]->tid;
			if (found[i]->deleted)
				continue;
			live[nlive] = found[i];
			vectors[nlive] = found[i]->vector;
			distances[nlive] = found[i]->distance;
			nlive++;
		}
		nseeds = nfound;

		nselected = HnswSelectNeighbors(metric, dims, vectors, distances, nlive,
										capacity, selected);
		edges[lc] = palloc(sizeof(HnswNewEdge) * Max(nselected, 1));
		for (int i = 0; i < nselected; i++)
		{
			edges[lc][i].tid = live[selected[i]]->tid;
			edges[lc][i].distance = live[selected[i]]->distance;
			edges[lc][i].copy = live[selected[i]]->distance == selfDistance &&
				memcmp(live[selected[i]]->vector, vec, sizeof(float) * dims) == 0;
			if (HnswLevelCodeDims(&meta.codec, lc) > 0)
				HnswCodecEncode(&meta.codec, live[selected[i]]->vector, edges[lc][i].code);
		}
		nedges[lc] = nselected;
	}

	/* 4. Write the element with its lists */
	isinline = HnswNeighborsFitInline(dims, m, level, &meta.codec);
	etup = HnswFormElement(dims, m, level, isinline, &meta.codec, vec, fingerprint,
						   &esize);
	etup->heaptids[0] = *heaptid;
	etup->nheaptids = 1;
	ntup = isinline ? NULL : HnswFormNeighborTuple(m, level, &meta.codec, &nsize);
	slots = isinline ? HnswTupleSlots(etup, dims) : ntup->slots;
	for (int lc = 0; lc <= top; lc++)
	{
		for (int i = 0; i < nedges[lc]; i++)
		{
			slots[HnswLevelStart(m, lc) + i] = edges[lc][i].tid;
			if (HnswLevelCodeDims(&meta.codec, lc) > 0)
				memcpy(HnswSlotCode(slots, m, level, &meta.codec, HnswLevelStart(m, lc) + i),
					   edges[lc][i].code, meta.codec.dims);
		}
	}
	etid = WriteElement(index, etup, esize, ntup, nsize, meta.insertPage);

	/*
	 * 5. Reverse edges.  At level 0 only the nearest copy of vec among the
	 * neighbours links back (HnswAttachCopy).  One incoming edge keeps the
	 * new copy reachable, and edges from more copies would only push older
	 * copies out of full lists.
	 */
	for (int lc = 0; lc <= top; lc++)
	{
		bool		attached = false;

		for (int i = 0; i < nedges[lc]; i++)
		{
			if (lc == 0 && edges[lc][i].copy)
			{
				if (!attached)
					attached = HnswAttachCopy(index, metric, dims, m, &meta.codec,
											  &edges[lc][i].tid, &etid, vec, reached, tmpcxt);
				continue;
			}
			HnswAddReverseEdge(index, metric, dims, m, &meta.codec, lc, &edges[lc][i].tid,
							   &etid, vec, edges[lc][i].distance, NULL, tmpcxt);
		}
	}

	/* 6. Entry point */
	if (level > meta.entryLevel)
		UpdateEntryPoint(index, &etid, level, dims);

	MemoryContextSwitchTo(oldcxt);
}

/* aminsert: index one heap row */
bool
hnswinsert(Relation index, Datum *values, bool *isnull, ItemPointer heap_tid,
		   Relation heap, IndexUniqueCheck checkUnique, bool indexUnchanged,
		   IndexInfo *indexInfo)
{
	MemoryContext tmpcxt;
	MemoryContext oldcxt;
	float	   *vec;
	int			dims;
	uint32		fingerprint;

	if (isnull[0])
		return false;

	tmpcxt = AllocSetContextCreate(CurrentMemoryContext, "hnsw insert",
								   ALLOCSET_DEFAULT_SIZES);
	oldcxt = MemoryContextSwitchTo(tmpcxt);
	vec = palloc(sizeof(float) * HNSW_MAX_DIM);
	if (HnswPrepareValue(index, HnswGetMetric(index), values[0], vec, &dims, &fingerprint))
		HnswInsertVector(index, vec, dims, fingerprint, heap_tid, tmpcxt);
	MemoryContextSwitchTo(oldcxt);
	MemoryContextDelete(tmpcxt);
	return false;
}
