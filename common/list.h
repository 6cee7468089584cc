/* list.h: an intrusive circular doubly-linked list (libuv's queue.h idea).
 * The head is a gh_link_t too; an element embeds a gh_link_t and is found
 * from it with GH_CONTAINER_OF. */
#ifndef GH_LIST_H
#define GH_LIST_H

typedef struct gh_link {
  struct gh_link *prev, *next;
} gh_link_t;

static inline void gh_list_init(gh_link_t *h) { h->prev = h->next = h; }

static inline int gh_list_empty(const gh_link_t *h) { return h->next == h; }

/* gh_list_insert puts |n| first in the list headed by |h|. */
static inline void gh_list_insert(gh_link_t *h, gh_link_t *n) {
  n->next = h->next;
  n->prev = h;
  h->next->prev = n;
  h->next = n;
}

/* gh_list_remove unlinks |n|. Removing an element that was never inserted
 * (zeroed) or was already removed does nothing. */
static inline void gh_list_remove(gh_link_t *n) {
  if (n->next == NULL) return;
  n->prev->next = n->next;
  n->next->prev = n->prev;
  n->prev = n->next = n;
}

#endif
