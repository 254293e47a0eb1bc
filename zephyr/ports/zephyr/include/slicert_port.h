/*
 * SliceRT Zephyr port: arch hooks. The kernel thread is Zephyr's main thread made
 * cooperative (CONFIG_MAIN_THREAD_PRIORITY < 0), so nothing preempts it between
 * micro-tiles; a requested switch happens at slicert_port_switch_point() (k_yield).
 */
#ifndef SLICERT_PORT_H_
#define SLICERT_PORT_H_

#include <stdint.h>
#include <zephyr/irq.h>

extern volatile uint32_t slicert_zephyr_switch_req;

static inline uint32_t slicert_port_irq_lock(void)
{
	return (uint32_t)irq_lock();
}

static inline void slicert_port_irq_unlock(uint32_t key)
{
	irq_unlock((unsigned int)key);
}

static inline void slicert_port_request_switch(void)
{
	slicert_zephyr_switch_req = 1u;
}

void slicert_port_switch_point(void);
uint32_t slicert_port_rt_block(uint32_t key);

#endif /* SLICERT_PORT_H_ */
