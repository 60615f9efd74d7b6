/* Sends one control code to a service: what `sc.exe control NAME
 * paramchange` does on Windows, for Wine, whose sc.exe has no "control"
 * command. Test tool only (not installed):
 *
 *   svc_control.exe NAME paramchange|interrogate
 *
 * Exit 0 when the SCM delivered the control, 1 otherwise (the error code
 * is printed). */
#include <windows.h>

#include <stdio.h>
#include <string.h>

int main(int argc, char **argv) {
  SERVICE_STATUS st;
  DWORD code, access;
  if (argc != 3) {
    fprintf(stderr, "usage: svc_control NAME paramchange|interrogate\n");
    return 2;
  }
  if (strcmp(argv[2], "paramchange") == 0) {
    code = SERVICE_CONTROL_PARAMCHANGE;
    access = SERVICE_PAUSE_CONTINUE; /* the right PARAMCHANGE needs */
  } else if (strcmp(argv[2], "interrogate") == 0) {
    code = SERVICE_CONTROL_INTERROGATE;
    access = SERVICE_INTERROGATE;
  } else {
    fprintf(stderr, "svc_control: unknown control '%s'\n", argv[2]);
    return 2;
  }
  SC_HANDLE scm = OpenSCManagerA(NULL, NULL, SC_MANAGER_CONNECT);
  if (!scm) {
    fprintf(stderr, "OpenSCManager: error %lu\n", GetLastError());
    return 1;
  }
  SC_HANDLE svc = OpenServiceA(scm, argv[1], access);
  if (!svc) {
    fprintf(stderr, "OpenService %s: error %lu\n", argv[1], GetLastError());
    CloseServiceHandle(scm);
    return 1;
  }
  int rc = 0;
  if (!ControlService(svc, code, &st)) {
    fprintf(stderr, "ControlService %s %s: error %lu\n", argv[1], argv[2], GetLastError());
    rc = 1;
  } else {
    printf("%s: control %s delivered (state %lu, accepts 0x%lx)\n", argv[1], argv[2],
           st.dwCurrentState, st.dwControlsAccepted);
  }
  CloseServiceHandle(svc);
  CloseServiceHandle(scm);
  return rc;
}
