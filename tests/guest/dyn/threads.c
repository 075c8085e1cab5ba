/* Threads in a dynamic program: thread-local storage set up by the
 * loader, mutexes, condition variables, joins. */
#include <pthread.h>
#include <stdio.h>

static __thread long tls_counter = 100;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static long total;
static int arrived;

static void *worker(void *arg) {
    long id = (long)arg;
    for (int i = 0; i < 100000; i++) tls_counter++;
    pthread_mutex_lock(&lock);
    total += tls_counter - 100;
    arrived++;
    pthread_cond_broadcast(&cond);
    pthread_mutex_unlock(&lock);
    return (void *)(id * 10 + (tls_counter == 100100));
}

int main(void) {
    pthread_t t[4];
    for (long i = 0; i < 4; i++) pthread_create(&t[i], NULL, worker, (void *)i);
    pthread_mutex_lock(&lock);
    while (arrived < 4) pthread_cond_wait(&cond, &lock);
    pthread_mutex_unlock(&lock);
    for (int i = 0; i < 4; i++) {
        void *r;
        pthread_join(t[i], &r);
        printf("thread %d returned %ld\n", i, (long)r);
    }
    printf("total %ld, main's own counter %ld\n", total, tls_counter);
    return 0;
}
