/* The guest's lr_pal_t (pal_guest.c): what the agent's relays need from
 * Linux, kept in guest/ so the guest never links the host's layer. */
#ifndef LR_GUEST_PAL_H
#define LR_GUEST_PAL_H

#include "lr_pal.h"

extern const lr_pal_t lr_guest_pal;

#endif
