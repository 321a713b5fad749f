#include "fan.h"
static int g; static void *resp(void*a){ char buf[8192]; for(;;){ ssize_t n=read(g,buf,sizeof buf); if(n<=0) return 0;
  for(struct fanotify_event_metadata*m=(void*)buf;FAN_EVENT_OK(m,n);m=FAN_EVENT_NEXT(m,n)){ char ep[64],l[256]=""; sprintf(ep,"/proc/%d/exe",m->pid); ssize_t k=readlink(ep,l,255); if(k>0) l[k]=0;
   struct range_info*ri=(void*)((char*)m+m->metadata_len); 
   fprintf(stderr,"  EVENT mask=%#llx pid=%d exe=%s %s\n",(unsigned long long)m->mask,m->pid,l, m->event_len>m->metadata_len?"(range)":""); struct fanotify_response r={m->fd,FAN_ALLOW}; write(g,&r,sizeof r); close(m->fd);} } }
int main(int c,char**v){ g=fanotify_init(FAN_CLASS_PRE_CONTENT|FAN_CLOEXEC,O_RDONLY); if(fanotify_mark(g,FAN_MARK_ADD,FAN_OPEN_PERM|FAN_OPEN_EXEC_PERM|FAN_PRE_ACCESS,AT_FDCWD,v[1])){perror("mark");return 1;}
 pthread_t t; pthread_create(&t,0,resp,0); pid_t k=fork(); if(!k){ execl(v[1],"x",NULL); _exit(9);} int st; waitpid(k,&st,0); fprintf(stderr,"exec exit status %d\n",WEXITSTATUS(st)); return 0;}
